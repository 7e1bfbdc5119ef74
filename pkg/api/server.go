package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/source"
)

// MaxBody is the largest request body the API accepts.
const MaxBody = 64 << 10

// Agent is what the API asks and tells. Its methods may be called
// concurrently from many requests.
type Agent interface {
	VIPs() VIPs
	Members() Members
	// Register publishes a backend of this node; created says whether it
	// is new. Deregister withdraws one; removed says whether it was there.
	// Both return an *InvalidError for input the agent refuses; Register
	// a *FullError when the node holds as many backends as it can publish.
	Register(e source.Entry) (created bool, key string, err error)
	Deregister(e source.Entry) (removed bool, key string, err error)
	// Leave makes the agent leave the cluster for good (peers drop this
	// node's backends at once) and stop; it returns once the leave has
	// begun.
	Leave() error
	// Ready says whether the agent has merged the cluster state and synced
	// the kernel once, and if not, why not; ready with a reason is ready
	// but degraded (IPv6 VIPs disabled, say), and /readyz shows it.
	Ready() (bool, string)
}

// InvalidError is a request the agent refuses: a 400, not a 500.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// FullError is a registration the agent refuses because this node holds as
// many backends as it can publish: a 507, and nothing is stored.
type FullError struct{ Err error }

func (e *FullError) Error() string { return e.Err.Error() }
func (e *FullError) Unwrap() error { return e.Err }

// NewHandler serves the API: /v1/vips, /v1/members, /v1/backends, /metrics,
// /healthz and /readyz. Metrics come from gatherer.
func NewHandler(a Agent, gatherer prometheus.Gatherer, log *logrus.Entry) http.Handler {
	s := &server{agent: a, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/vips", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := WriteVIPs(w, a.VIPs()); err != nil {
			log.WithError(err).Debug("GET /v1/vips: answer cut short")
		}
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, a.Members()) })
	mux.HandleFunc("PUT /v1/backends", s.putBackend)
	mux.HandleFunc("DELETE /v1/backends", s.deleteBackend)
	mux.HandleFunc("POST /v1/backends/progress", s.progress)
	mux.HandleFunc("POST /v1/leave", func(w http.ResponseWriter, r *http.Request) {
		if err := a.Leave(); err != nil {
			s.fail(w, "leave", err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "leaving"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := a.Ready()
		switch {
		case !ok:
			writeJSON(w, http.StatusServiceUnavailable, Error{Error: "not ready: " + why})
		case why != "":
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "degraded": why})
		default:
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, Error{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

type server struct {
	agent Agent
	log   *logrus.Entry
}

func (s *server) putBackend(w http.ResponseWriter, r *http.Request) {
	e, ok := s.decode(w, r)
	if !ok {
		return
	}
	created, key, err := s.agent.Register(e)
	if err != nil {
		s.fail(w, "register", err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, Result{Created: created, Key: key})
}

func (s *server) deleteBackend(w http.ResponseWriter, r *http.Request) {
	e, ok := s.decode(w, r)
	if !ok {
		return
	}
	removed, key, err := s.agent.Deregister(e)
	if err != nil {
		s.fail(w, "deregister", err)
		return
	}
	if !removed {
		writeJSON(w, http.StatusNotFound, Error{Error: fmt.Sprintf("backend %s is not registered on this node", key)})
		return
	}
	writeJSON(w, http.StatusOK, Result{Removed: true, Key: key})
}

func (s *server) decode(w http.ResponseWriter, r *http.Request) (source.Entry, bool) {
	e, err := source.Decode(http.MaxBytesReader(w, r.Body, MaxBody), MaxBody)
	if err != nil {
		status := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		writeJSON(w, status, Error{Error: "bad request body: " + err.Error()})
		return source.Entry{}, false
	}
	return e, true
}

func (s *server) fail(w http.ResponseWriter, what string, err error) {
	var invalid *InvalidError
	if errors.As(err, &invalid) {
		writeJSON(w, http.StatusBadRequest, Error{Error: err.Error()})
		return
	}
	var full *FullError
	if errors.As(err, &full) {
		writeJSON(w, http.StatusInsufficientStorage, Error{Error: err.Error()})
		return
	}
	s.log.WithError(err).WithField("reason", what).Error("API request failed")
	writeJSON(w, http.StatusInternalServerError, Error{Error: what + ": " + err.Error()})
}

// WriteVIPs writes v as indented JSON, the same bytes as an encoder with
// two-space indentation gives, one VIP at a time: a table of 100,000
// backends is never held encoded whole (twice, with its indentation) in
// memory.
func WriteVIPs(w io.Writer, v VIPs) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString("{\n  \"vips\": ")
	if v.VIPs == nil {
		bw.WriteString("null")
	} else {
		bw.WriteString("[")
		for i := range v.VIPs {
			if i > 0 {
				bw.WriteString(",")
			}
			b, err := json.MarshalIndent(&v.VIPs[i], "    ", "  ")
			if err != nil {
				return fmt.Errorf("encode VIP %s: %w", v.VIPs[i].Label, err)
			}
			bw.WriteString("\n    ")
			bw.Write(b)
		}
		if len(v.VIPs) > 0 {
			bw.WriteString("\n  ")
		}
		bw.WriteString("]")
	}
	if len(v.Errors) > 0 {
		b, err := json.MarshalIndent(v.Errors, "  ", "  ")
		if err != nil {
			return fmt.Errorf("encode errors: %w", err)
		}
		bw.WriteString(",\n  \"errors\": ")
		bw.Write(b)
	}
	bw.WriteString("\n}\n")
	return bw.Flush()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
