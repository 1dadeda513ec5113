package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newHealthcheck is the probe a container runtime runs: the image has no shell and
// no curl, so the binary checks its own /healthz or /readyz.
func newHealthcheck() *cobra.Command {
	var url string
	var timeout time.Duration
	var insecure bool
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when an instance's /readyz (or --url) answers 200, 1 otherwise (for container health checks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return usageError{err}
			}
			client := &http.Client{}
			if insecure {
				// The instance's own certificate is usually for its public name, not 127.0.0.1.
				client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a local liveness probe
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "http://127.0.0.1:8080/readyz", "URL to check, e.g. http://127.0.0.1:8080/healthz")
	f.DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	f.BoolVar(&insecure, "insecure", false, "do not verify the TLS certificate (an instance started with --tls-cert)")
	return cmd
}
