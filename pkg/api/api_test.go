package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/source"
)

// fakeAgent records what the API hands it.
type fakeAgent struct {
	mu         sync.Mutex
	registered map[string]source.Entry
	ready      bool
	failWith   error
	left       int
}

func newFake() *fakeAgent { return &fakeAgent{registered: map[string]source.Entry{}, ready: true} }

func (f *fakeAgent) VIPs() VIPs {
	return VIPs{VIPs: []VIP{{Label: "/dcos-101/app2:10000", Name: "/dcos-101/app2", Framework: "marathon",
		Names: []string{"app2.dcos-101.marathon.l4lb.thisdcos.directory."}, Address: "11.1.2.3", Port: 10000, Protocol: "tcp",
		Scheduler: "wlc", Programmed: true, Backends: []Backend{{Address: "10.0.0.2:8080", Node: "node2", Weight: 1, Health: "healthy", ActiveConns: 2}}}}}
}
func (f *fakeAgent) Members() Members {
	return Members{Members: []Member{{Name: "node1", Address: "10.0.0.1:7946", State: "alive", Backends: 3}}}
}
func (f *fakeAgent) Register(e source.Entry) (bool, string, error) {
	l, err := e.Parse()
	if err != nil {
		return false, "", &InvalidError{Err: err}
	}
	if f.failWith != nil {
		return false, l.Key(), f.failWith
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, had := f.registered[l.Key()]
	f.registered[l.Key()] = e
	return !had, l.Key(), nil
}
func (f *fakeAgent) Deregister(e source.Entry) (bool, string, error) {
	l, err := e.Parse()
	if err != nil {
		return false, "", &InvalidError{Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, had := f.registered[l.Key()]
	delete(f.registered, l.Key())
	return had, l.Key(), nil
}
func (f *fakeAgent) Leave() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left++
	return nil
}
func (f *fakeAgent) Ready() (bool, string) {
	if f.ready {
		return true, ""
	}
	return false, "the kernel has not been synced yet"
}

func serve(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(path, "/metrics") && ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return rec.Code, rec.Body.String()
}

func handler(a Agent) http.Handler {
	l := logrus.New()
	l.SetOutput(io.Discard)
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "l4lb_test_total", Help: "test"}))
	return NewHandler(a, reg, logrus.NewEntry(l))
}

func TestBackendsLifecycle(t *testing.T) {
	f := newFake()
	h := handler(f)
	body := `{"vip": "/dcos-101/app2:10000", "backend": "10.0.0.12:8080"}`
	for _, tc := range []struct {
		method, body string
		code         int
		want         string
	}{
		{"PUT", body, 201, `"created": true`},
		{"PUT", body, 200, `"key"`},
		{"DELETE", body, 200, `"removed": true`},
		{"DELETE", body, 404, `is not registered on this node`},
	} {
		code, out := serve(t, h, tc.method, "/v1/backends", tc.body)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%s /v1/backends: %d %s, want %d with %q", tc.method, code, out, tc.code, tc.want)
		}
	}
	if len(f.registered) != 0 {
		t.Errorf("agent still holds %v", f.registered)
	}
}

func TestBadRequestsLoseNothing(t *testing.T) {
	f := newFake()
	h := handler(f)
	if code, _ := serve(t, h, "PUT", "/v1/backends", `{"vip": "/keep:80", "backend": "10.0.0.1:80"}`); code != 201 {
		t.Fatalf("setup: %d", code)
	}
	for name, tc := range map[string]struct {
		method, body string
		code         int
		want         string
	}{
		"not json":      {"PUT", `{"vip": `, 400, "bad request body"},
		"unknown field": {"PUT", `{"vip": "/a:80", "backend": "10.0.0.1:80", "colour": "red"}`, 400, "colour"},
		"bad vip":       {"PUT", `{"vip": "/a b:80", "backend": "10.0.0.1:80"}`, 400, "cannot stand in a DNS label"},
		"bad port":      {"PUT", `{"vip": "/a:0", "backend": "10.0.0.1:80"}`, 400, "port"},
		"no backend":    {"PUT", `{"vip": "/a:80"}`, 400, "backend"},
		"too large":     {"PUT", `{"vip": "/a:80", "backend": "10.0.0.1:80", "scheduler": "` + strings.Repeat("x", MaxBody) + `"}`, 413, "bad request body"},
		"bad delete":    {"DELETE", `{"vip": "", "backend": "10.0.0.1:80"}`, 400, "vip"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out := serve(t, h, tc.method, "/v1/backends", tc.body)
			var e Error
			if code != tc.code || json.Unmarshal([]byte(out), &e) != nil || !strings.Contains(e.Error, tc.want) {
				t.Errorf("%d %s, want %d and an error with %q", code, out, tc.code, tc.want)
			}
		})
	}
	if len(f.registered) != 1 {
		t.Errorf("bad requests changed the registrations: %v", f.registered)
	}
}

func TestInternalErrorIs500(t *testing.T) {
	f := newFake()
	f.failWith = errors.New("disk full")
	code, out := serve(t, handler(f), "PUT", "/v1/backends", `{"vip": "/a:80", "backend": "10.0.0.1:80"}`)
	if code != 500 || !strings.Contains(out, "disk full") {
		t.Errorf("%d %s", code, out)
	}
}

func TestReadOnlyEndpoints(t *testing.T) {
	f := newFake()
	h := handler(f)
	code, out := serve(t, h, "GET", "/v1/vips", "")
	var v VIPs
	if code != 200 || json.Unmarshal([]byte(out), &v) != nil || len(v.VIPs) != 1 || v.VIPs[0].Backends[0].ActiveConns != 2 {
		t.Errorf("GET /v1/vips: %d %s", code, out)
	}
	code, out = serve(t, h, "GET", "/v1/members", "")
	if code != 200 || !strings.Contains(out, `"state": "alive"`) {
		t.Errorf("GET /v1/members: %d %s", code, out)
	}
	if code, _ := serve(t, h, "GET", "/healthz", ""); code != 200 {
		t.Errorf("GET /healthz: %d", code)
	}
	if code, out := serve(t, h, "GET", "/readyz", ""); code != 200 || !strings.Contains(out, "ready") {
		t.Errorf("GET /readyz: %d %s", code, out)
	}
	f.ready = false
	if code, out := serve(t, h, "GET", "/readyz", ""); code != 503 || !strings.Contains(out, "not been synced") {
		t.Errorf("GET /readyz when not ready: %d %s", code, out)
	}
	if code, out := serve(t, h, "GET", "/v2/nothing", ""); code != 404 || !strings.Contains(out, "no such endpoint") {
		t.Errorf("unknown path: %d %s", code, out)
	}
	if code, _ := serve(t, h, "POST", "/v1/vips", ""); code != 405 && code != 404 {
		t.Errorf("POST /v1/vips: %d", code)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "l4lb_test_total 0") {
		t.Errorf("GET /metrics: %d %s", rec.Code, rec.Body.String())
	}
}

// TestClientAgainstHandler runs the client against the handler over a
// loopback listener.
func TestClientAgainstHandler(t *testing.T) {
	f := newFake()
	srv := httptest.NewServer(handler(f))
	defer srv.Close()
	c := NewClient(strings.TrimPrefix(srv.URL, "http://"))
	ctx := context.Background()
	w := uint32(3)
	res, err := c.Register(ctx, source.Entry{VIP: "/a:80", Backend: "10.0.0.1:80", Weight: &w})
	if err != nil || !res.Created {
		t.Fatalf("Register: %+v %v", res, err)
	}
	if _, err := c.Register(ctx, source.Entry{VIP: "/a:0", Backend: "10.0.0.1:80"}); err == nil || !strings.Contains(err.Error(), "port") {
		t.Errorf("bad Register: %v", err)
	}
	v, err := c.VIPs(ctx)
	if err != nil || len(v.VIPs) != 1 {
		t.Errorf("VIPs: %+v %v", v, err)
	}
	m, err := c.Members(ctx)
	if err != nil || len(m.Members) != 1 {
		t.Errorf("Members: %+v %v", m, err)
	}
	if _, err := c.Deregister(ctx, source.Entry{VIP: "/b:80", Backend: "10.0.0.1:80"}); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("Deregister of an unknown backend: %v", err)
	}
	if err := c.Leave(ctx); err != nil || f.left != 1 {
		t.Errorf("Leave: %v, the agent was asked %d times", err, f.left)
	}
	if code, _ := serve(t, handler(f), "GET", "/v1/leave", ""); code != 404 || f.left != 1 {
		t.Errorf("GET /v1/leave: %d and %d leaves, want 404 and still 1: leaving takes a POST", code, f.left)
	}
	down := NewClient("127.0.0.1:1")
	if _, err := down.VIPs(ctx); err == nil || !strings.Contains(err.Error(), "cannot reach the l4lb agent at 127.0.0.1:1") {
		t.Errorf("agent not running: %v", err)
	}
}

func TestRender(t *testing.T) {
	var b bytes.Buffer
	if err := RenderVIPsWide(&b, newFake().VIPs()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/dcos-101/app2:10000", "tcp 11.1.2.3:10000", "wlc", "programmed",
		"app2.dcos-101.marathon.l4lb.thisdcos.directory", "-> 10.0.0.2:8080", "node2", "weight 1", "healthy", "active 2"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("vips output lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := RenderVIPs(&b, VIPs{Errors: []string{"range 11.0.0.0/30 is full"}}); err != nil || !strings.Contains(b.String(), "no VIPs") || !strings.Contains(b.String(), "range 11.0.0.0/30 is full") {
		t.Errorf("empty table output: %q %v", b.String(), err)
	}
	b.Reset()
	pub := VIPs{VIPs: []VIP{{Label: "/app2:10000", Address: "11.0.0.1", Port: 10000, Protocol: "tcp", PublicPort: 10000, PublishedAt: []string{"192.0.2.10:10000"}}}}
	if err := RenderVIPsWide(&b, pub); err != nil || !strings.Contains(b.String(), "port 10000 of every public node; here at 192.0.2.10:10000") {
		t.Errorf("public VIP output, wide: %q %v", b.String(), err)
	}
	b.Reset()
	if err := RenderVIPs(&b, pub); err != nil || !strings.Contains(b.String(), " 192.0.2.10:10000 ") {
		t.Errorf("public VIP output: %q %v", b.String(), err)
	}
	b.Reset()
	if err := RenderMembers(&b, newFake().Members()); err != nil || !strings.Contains(b.String(), "node1") || !strings.Contains(b.String(), "alive") {
		t.Errorf("members output: %q %v", b.String(), err)
	}
}

// TestVIPTable: one line per VIP in fixed columns, sorted by name; the
// backends that take no new connections listed after, with why.
func TestVIPTable(t *testing.T) {
	v := VIPs{VIPs: []VIP{
		{Label: "/zeta:80", Address: "11.0.0.3", Port: 80, Protocol: "tcp", Scheduler: "wlc", Programmed: true,
			Backends: []Backend{{Address: "10.0.0.1:80", Node: "node1", Weight: 1, Health: "healthy"}}},
		{Label: "/Alpha:80", Address: "11.0.0.1", Port: 80, Protocol: "tcp", Scheduler: "rr", Persistence: 60, Programmed: true,
			Backends: []Backend{
				{Address: "10.0.0.2:80", Node: "node2", Weight: 1, Health: "healthy"},
				{Address: "10.0.0.3:80", Node: "node3", Weight: 0, Health: "unhealthy"},
				{Address: "10.0.0.4:80", Node: "node3", Weight: 0, Health: "draining", State: "draining", Reason: "deregistered"},
			}},
	}}
	var b bytes.Buffer
	if err := RenderVIPs(&b, SelectVIPs(v, "", "")); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	want := [][]string{
		{"VIP", "PROTO", "ADDRESS", "SCHEDULER", "PUBLIC", "BACKENDS", "STATE"},
		{"/Alpha:80", "tcp", "11.0.0.1:80", "rr", "sticky", "60s", "-", "1/3", "up", "programmed"},
		{"/zeta:80", "tcp", "11.0.0.3:80", "wlc", "-", "1/1", "up", "programmed"},
		{},
		{"NOT", "SERVING", "VIP", "BACKEND", "NODE", "STATE", "REASON"},
		{"/Alpha:80", "10.0.0.3:80", "node3", "down", "failing", "its", "health", "check"},
		{"/Alpha:80", "10.0.0.4:80", "node3", "draining", "deregistered"},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); !slices.Equal(got, w) {
			t.Errorf("line %d = %q, want fields %q", i, lines[i], w)
		}
	}
	if got := SelectVIPs(v, "ALPHA", ""); len(got.VIPs) != 1 || got.VIPs[0].Label != "/Alpha:80" {
		t.Errorf("filter by name: %+v", got.VIPs)
	}
	if got := SelectVIPs(v, "11.0.0.3", ""); len(got.VIPs) != 1 || got.VIPs[0].Label != "/zeta:80" {
		t.Errorf("filter by address: %+v", got.VIPs)
	}
	if got := SelectVIPs(v, "", "node1"); len(got.VIPs) != 1 || got.VIPs[0].Label != "/zeta:80" {
		t.Errorf("filter by node: %+v", got.VIPs)
	}
	if got := SelectVIPs(v, "nothing-matches", ""); len(got.VIPs) != 0 {
		t.Errorf("filter matching nothing: %+v", got.VIPs)
	}
}

// TestWriteVIPsIsTheEncoders: the streamed /v1/vips answer is byte for
// byte what encoding/json with two-space indentation writes, so a field
// added to VIPs that WriteVIPs does not write fails here.
func TestWriteVIPsIsTheEncoders(t *testing.T) {
	for name, v := range map[string]VIPs{
		"fake":   newFake().VIPs(),
		"empty":  {VIPs: []VIP{}},
		"nil":    {},
		"errors": {VIPs: []VIP{{Label: "/a:80", Backends: []Backend{}}}, Errors: []string{"range 11.0.0.0/30 is full", "another"}},
	} {
		var want, got bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		if err := WriteVIPs(&got, v); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%s: WriteVIPs wrote\n%s\nencoding/json writes\n%s", name, got.String(), want.String())
		}
	}
}

// TestAPIReferenceNamesEveryField: every JSON field of the API's documents
// is in the package README's reference, written as `name`.
func TestAPIReferenceNamesEveryField(t *testing.T) {
	doc, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(ty reflect.Type) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Map {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] {
			return
		}
		seen[ty] = true
		for f := range ty.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !strings.Contains(string(doc), "`"+name+"`") {
				t.Errorf("%s.%s: JSON field %q is not in pkg/api/README.md", ty.Name(), f.Name, name)
			}
			walk(f.Type)
		}
	}
	for _, v := range []any{VIPs{}, Members{}, Result{}, Error{}, Progress{}, source.Entry{}} {
		walk(reflect.TypeOf(v))
	}
	if len(seen) < 8 {
		t.Fatalf("walked %d document types; the test no longer sees the API's documents", len(seen))
	}
}
