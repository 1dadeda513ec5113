package testenv

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

// The shared server is package state on purpose: it lives as long as the test
// binary, which no single test's Cleanup can express. Main owns its end.
var (
	mainRunning atomic.Bool
	sharedOnce  sync.Once
	sharedCH    *ClickHouseEnv
	sharedErr   error
)

// Main runs the package's tests and then stops what they shared. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// in every package that calls SharedClickHouse.
func Main(m *testing.M) int {
	mainRunning.Store(true)
	code := m.Run()
	if sharedCH != nil {
		sharedCH.close()
		_ = os.RemoveAll(sharedCH.dir)
	}
	return code
}

// SharedClickHouse returns the test binary's ClickHouse server, starting it on
// first use, so a package pays the start once. Tests must not Stop it or close
// its Conn; each should work in its own CreateDatabase(t). It fails the test if
// the package's TestMain does not call Main, which is what stops the server.
func SharedClickHouse(t testing.TB) *ClickHouseEnv {
	t.Helper()
	if !mainRunning.Load() {
		t.Fatal("testenv: SharedClickHouse needs `func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }` in this package")
	}
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "orderflow-clickhouse-")
		if err != nil {
			sharedErr = err
			return
		}
		sharedCH, sharedErr = newClickHouse(dir)
		if sharedErr != nil {
			_ = os.RemoveAll(dir)
			return
		}
		sharedCH.shared = true
		fmt.Fprintf(os.Stderr, "testenv: shared clickhouse-server ready at %s in %s\n", sharedCH.Addr, sharedCH.StartupTime)
	})
	if sharedErr != nil {
		t.Fatalf("testenv: %v", sharedErr)
	}
	return sharedCH
}
