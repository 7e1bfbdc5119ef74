package api

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/l4lb/l4lb/pkg/source"
)

// The two rollouts a deploy waits for.
const (
	// WaitRegistered: every live node's kernel has the backend programmed.
	WaitRegistered = "registered"
	// WaitDrained: no live node sends new connections to the backend and
	// none holds an established connection to it.
	WaitDrained = "drained"
)

// Progress is the answer of POST /v1/backends/progress?for=registered|drained:
// how far a registration or a deregistration of this node's backend has
// reached across the live nodes.
type Progress struct {
	Key string `json:"key"`
	For string `json:"for"`
	// Done: the rollout is complete on every live node.
	Done bool `json:"done"`
	// Reason says what is still awaited when not Done.
	Reason string `json:"reason,omitempty"`
	// Version is this node's record version that carries the change
	// ("generation.seq"), once published.
	Version string `json:"version,omitempty"`
	// Live are the live nodes; Applied those whose kernel programmed the
	// change; Pending the others.
	Live    int      `json:"live"`
	Applied []string `json:"applied"`
	Pending []string `json:"pending,omitempty"`
	// Active and Inactive are the drained backend's connections on the
	// live nodes that hold it draining ("drained" only).
	Active   int            `json:"active_conns"`
	Inactive int            `json:"inact_conns"`
	ByNode   map[string]int `json:"active_by_node,omitempty"`
}

// ProgressAgent is an Agent that can say how far a change has reached
// (the agent; tests' fakes need not).
type ProgressAgent interface {
	Progress(e source.Entry, want string) (Progress, error)
}

func (s *server) progress(w http.ResponseWriter, r *http.Request) {
	pa, ok := s.agent.(ProgressAgent)
	if !ok {
		writeJSON(w, http.StatusNotImplemented, Error{Error: "this agent cannot report rollouts"})
		return
	}
	want := r.URL.Query().Get("for")
	if want != WaitRegistered && want != WaitDrained {
		writeJSON(w, http.StatusBadRequest, Error{Error: "for=" + want + ": want registered or drained"})
		return
	}
	e, ok := s.decode(w, r)
	if !ok {
		return
	}
	p, err := pa.Progress(e, want)
	if err != nil {
		s.fail(w, "progress", err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// Progress asks how far the registration (want = WaitRegistered) or the
// deregistration (WaitDrained) of e has reached.
func (c *Client) Progress(ctx context.Context, e source.Entry, want string) (Progress, error) {
	var p Progress
	err := c.do(ctx, http.MethodPost, "/v1/backends/progress?for="+url.QueryEscape(want), e, &p)
	return p, err
}

// Wait polls Progress every interval until the rollout is done or ctx
// ends, calling seen (if not nil) with each answer that differs from the
// previous one. It returns the last answer; when ctx ended first, with an
// error that says what remains.
func (c *Client) Wait(ctx context.Context, e source.Entry, want string, interval time.Duration, seen func(Progress)) (Progress, error) {
	var last Progress
	var lastErr error
	shown := ""
	for {
		p, err := c.Progress(ctx, e, want)
		if err == nil {
			last, lastErr = p, nil
			if s := fmt.Sprintf("%v %s %v %d", p.Done, p.Reason, p.Pending, p.Active); s != shown && seen != nil {
				shown = s
				seen(p)
			}
			if p.Done {
				return p, nil
			}
		} else if ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, fmt.Errorf("gave up waiting for %s to be %s: %w", e.Backend, want, lastErr)
			}
			return last, &WaitError{Progress: last}
		case <-time.After(interval):
		}
	}
}

// WaitError is a wait that ran out of time, with what remained.
type WaitError struct{ Progress Progress }

func (e *WaitError) Error() string {
	p := e.Progress
	switch {
	case p.Reason == "":
		return fmt.Sprintf("timed out: %s not %s", p.Key, p.For)
	case p.For == WaitDrained && len(p.Pending) == 0 && p.Active > 0:
		var parts []string
		for _, n := range slices.Sorted(maps.Keys(p.ByNode)) {
			parts = append(parts, fmt.Sprintf("%s: %d", n, p.ByNode[n]))
		}
		return fmt.Sprintf("timed out: %d connections remain to %s (%s)", p.Active, p.Key, strings.Join(parts, ", "))
	case len(p.Pending) > 0:
		return fmt.Sprintf("timed out: %s (%s)", p.Reason, strings.Join(p.Pending, ", "))
	}
	return "timed out: " + p.Reason
}
