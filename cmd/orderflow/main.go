// Command orderflow runs the order-status pipeline and its tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err))
}

// exitCode maps an error to the process exit status: 0 ok, 2 usage, 1 anything else.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "orderflow:", err)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "orderflow:", err)
		return 1
	}
}

// usageError marks errors in how the command was called.
type usageError struct{ error }
