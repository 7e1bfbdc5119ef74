package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/l4lb/l4lb/pkg/source"
)

// DefaultAddr is where the agent's API listens unless told otherwise.
const DefaultAddr = "127.0.0.1:62080"

// Client talks to one agent's API.
type Client struct {
	Addr string // host:port
	HTTP *http.Client
}

// NewClient returns a client for the agent at addr, with a short timeout: the
// API is local and answers at once or not at all.
func NewClient(addr string) *Client {
	return &Client{Addr: addr, HTTP: &http.Client{Timeout: 10 * time.Second}}
}

// VIPs fetches GET /v1/vips.
func (c *Client) VIPs(ctx context.Context) (VIPs, error) {
	var v VIPs
	err := c.do(ctx, http.MethodGet, "/v1/vips", nil, &v)
	return v, err
}

// Members fetches GET /v1/members.
func (c *Client) Members(ctx context.Context) (Members, error) {
	var m Members
	err := c.do(ctx, http.MethodGet, "/v1/members", nil, &m)
	return m, err
}

// Register publishes a backend on the agent.
func (c *Client) Register(ctx context.Context, e source.Entry) (Result, error) {
	var r Result
	err := c.do(ctx, http.MethodPut, "/v1/backends", e, &r)
	return r, err
}

// Deregister withdraws a backend from the agent.
func (c *Client) Deregister(ctx context.Context, e source.Entry) (Result, error) {
	var r Result
	err := c.do(ctx, http.MethodDelete, "/v1/backends", e, &r)
	return r, err
}

// Leave asks the agent to leave the cluster for good and stop.
func (c *Client) Leave(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/leave", nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.Addr+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the l4lb agent at %s (is it running? see --api): %w", c.Addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("agent at %s: %s", c.Addr, e.Error)
		}
		return fmt.Errorf("agent at %s: %s %s: %s", c.Addr, method, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}
