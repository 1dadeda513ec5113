package testenv

import (
	"fmt"
	"net"
)

// freePorts returns n distinct free loopback TCP ports. They are all held open
// together (so they differ) and then released for the server to bind. Another
// process could take one in between; on a test machine that is rare, and the
// server then fails to start with "address already in use" in its log.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a free port: %w", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}
