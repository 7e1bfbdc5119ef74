package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
)

// maxBodyRead is how much of an HTTP check's answer is read before the
// connection is closed; the status line decides, the body is ignored.
const maxBodyRead = 4 << 10

// probeTarget runs one check of t. It returns what it saw on success, or an error
// that says why the check failed.
func (c *Checker) probeTarget(ctx context.Context, t Target) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	var (
		result string
		err    error
	)
	switch t.Kind {
	case HTTP:
		result, err = c.probeHTTP(ctx, t)
	default:
		result, err = probeTCP(ctx, t)
	}
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "", fmt.Errorf("%s check of %s: no answer within %s", t.Kind, t.Addr, t.Timeout)
	}
	return result, err
}

func probeTCP(ctx context.Context, t Target) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.Addr.String())
	if err != nil {
		return "", fmt.Errorf("tcp check: %w", err)
	}
	_ = conn.Close() // the connection was only to see the port open
	return "tcp connect to " + t.Addr.String() + " ok", nil
}

func (c *Checker) probeHTTP(ctx context.Context, t Target) (string, error) {
	url := "http://" + t.Addr.String() + t.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("http check: build request for %s: %w", url, err)
	}
	req.Header.Set("User-Agent", "l4lb-health-check")
	resp, err := c.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("http check: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyRead)) // best effort: only the status matters
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("http check: GET %s: status %d", url, resp.StatusCode)
	}
	return fmt.Sprintf("GET %s: status %d", url, resp.StatusCode), nil
}
