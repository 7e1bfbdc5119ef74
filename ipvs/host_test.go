package ipvs

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/l4lb/l4lb/vip"
)

// stuckClient is an IPVS client whose socket never answers until closed.
type stuckClient struct {
	closed chan struct{}
}

func (s *stuckClient) services() ([]Service, error) {
	<-s.closed
	return nil, errors.New("socket closed")
}
func (s *stuckClient) destinations(Service) ([]Destination, error) {
	<-s.closed
	return nil, errors.New("socket closed")
}
func (s *stuckClient) do(ops []Op) []error { <-s.closed; return make([]error, len(ops)) }
func (s *stuckClient) close()              { close(s.closed) }

// answeringClient answers at once.
type answeringClient struct{}

func (answeringClient) services() ([]Service, error)                { return []Service{{Scheduler: "rr"}}, nil }
func (answeringClient) destinations(Service) ([]Destination, error) { return nil, nil }
func (answeringClient) do(ops []Op) []error                         { return make([]error, len(ops)) }
func (answeringClient) close()                                      {}

func TestStuckSocketTimesOutAndIsReopened(t *testing.T) {
	var opens atomic.Int32
	k := &Kernel{cfg: KernelConfig{Timeout: 50 * time.Millisecond}}
	k.opener = func(string) (ipvsClient, error) {
		if opens.Add(1) == 1 {
			return &stuckClient{closed: make(chan struct{})}, nil
		}
		return answeringClient{}, nil
	}
	start := time.Now()
	_, err := k.Services()
	if err == nil || !strings.Contains(err.Error(), "no answer from the kernel in 50ms") {
		t.Fatalf("stuck socket: err %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the deadline of 50ms took %s", d)
	}
	svcs, err := k.Services()
	if err != nil || len(svcs) != 1 {
		t.Fatalf("the call after a timeout: %v, %v; want a reopened socket that answers", svcs, err)
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("opened %d sockets, want 2 (one reopen)", n)
	}
}

func TestStuckWriteIsAttributedAndReopened(t *testing.T) {
	var opens atomic.Int32
	k := &Kernel{cfg: KernelConfig{Timeout: 50 * time.Millisecond}}
	k.opener = func(string) (ipvsClient, error) {
		opens.Add(1)
		return &stuckClient{closed: make(chan struct{})}, nil
	}
	svc := Service{ServiceKey: vip.ServiceKey{Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Protocol: vip.TCP}, Scheduler: "wlc"}
	errs := k.Apply([]Op{{Kind: AddService, Service: svc}, {Kind: AddDestination, Service: svc, Destination: Destination{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1}}})
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "add virtual service TCP 11.0.0.1:80") {
		t.Errorf("first op: %v", errs[0])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "add real server 10.0.0.1:80 (weight 1) to TCP 11.0.0.1:80") {
		t.Errorf("second op: %v", errs[1])
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("opened %d sockets for two stuck calls, want 2", n)
	}
}

func TestRunAppliesUpdatesUntilCancelled(t *testing.T) {
	fake := NewFake()
	programmed := make(chan *vip.Table, 10)
	r, err := New(Config{Kernel: fake, Logger: quietLogger(), OnProgrammed: func(t *vip.Table) { programmed <- t }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	for i := 1; i <= 5; i++ { // a burst: only the last table matters
		vs := make([]vip.VIP, i)
		for j := range vs {
			vs[j] = vipOf("tcp 11.0.0."+string(rune('0'+j+1))+":80", "10.0.0.1:80")
		}
		r.Update(tableOf(vs...))
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-programmed:
			if len(p.VIPs) != 5 {
				continue
			}
		case <-deadline:
			t.Fatal("the burst of updates was never applied")
		}
		break
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if st := r.Stats(); st.Ops["add_service"] != 5 {
		t.Errorf("ops %v: want exactly 5 services added", st.Ops)
	}
}

func TestCollectorExportsStats(t *testing.T) {
	f := newFixture(t, nil, nil)
	f.apply(tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80")), false)
	reg := prometheus.NewRegistry()
	if err := reg.Register(f.r.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			name := mf.GetName()
			for _, l := range m.Label {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = value(m)
		}
	}
	for name, want := range map[string]float64{
		"l4lb_ipvs_operations_total{kind=add_destination}": 2,
		"l4lb_ipvs_operations_total{kind=add_service}":     1,
		"l4lb_ipvs_syncs_total{kind=full}":                 1,
		"l4lb_ipvs_services":                               1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}

func value(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// TestRunChecksDrainsOnItsOwn: with Run, a draining backend is checked
// DrainCheckInterval after its drain began, without any Update, and deleted
// once idle.
func TestRunChecksDrainsOnItsOwn(t *testing.T) {
	f := newFixture(t, nil, nil) // DrainCheckInterval 1s, fake clock
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; kernel %q", what, f.state())
			}
			time.Sleep(time.Millisecond)
		}
	}
	f.r.Update(tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80")))
	waitFor("the table", func() bool { s := f.state(); return len(s) == 1 && strings.Count(s[0], "w1") == 2 })
	f.r.Update(tableOf(vipOf("tcp 11.0.0.1:80", "10.0.0.1:80")))
	waitFor("the drain", func() bool { s := f.state(); return len(s) == 1 && strings.Contains(s[0], "10.0.0.2:80 w0") })
	waitFor("a drain check scheduled in 1s", func() bool { at, ok := f.clock.NextDeadline(); return ok && at.Equal(t0.Add(time.Second)) })
	f.clock.Step(time.Second)
	waitFor("the idle backend's deletion", func() bool { s := f.state(); return len(s) == 1 && !strings.Contains(s[0], "10.0.0.2") })
}
