package dns

import (
	"testing"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// TestCollector: the server's collector exports the dns_* families with
// the agent's names, help, labels and types, read from Stats when
// gathered: replies by rcode, drops by reason, the zone's names.
func TestCollector(t *testing.T) {
	s := newTestServer(t, Config{}, baseTable())
	ask(t, s, question("web.marathon."+apex, mdns.TypeAAAA), false)
	ask(t, s, question("web.marathon."+apex, mdns.TypeAAAA), true)
	ask(t, s, question("nope.marathon."+apex, mdns.TypeA), false)
	s.ServeDNS(newRecorder(false), &mdns.Msg{MsgHdr: mdns.MsgHdr{Response: true}}) // an answer is dropped

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	type family struct{ typ, help string }
	want := map[string]family{
		"l4lb_dns_replies_total":          {"COUNTER", "DNS replies by response code."},
		"l4lb_dns_forwarded_total":        {"COUNTER", "DNS queries answered by an upstream."},
		"l4lb_dns_forward_failures_total": {"COUNTER", "DNS queries every upstream failed."},
		"l4lb_dns_dropped_total":          {"COUNTER", "DNS queries dropped unanswered, malformed or over the in-flight cap."},
		"l4lb_dns_zone_names":             {"GAUGE", "VIP names the DNS zone answers."},
		"l4lb_dns_zone_updates_total":     {"COUNTER", "DNS zone updates, by how they were made: diff (only the changed VIPs' names) or full (the whole zone rebuilt)."},
	}
	got := map[string]family{}
	values := map[string]map[string]float64{} // family -> its one label's value -> value
	for _, f := range families {
		got[f.GetName()] = family{f.GetType().String(), f.GetHelp()}
		values[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			label := ""
			if ls := m.GetLabel(); len(ls) == 1 {
				label = ls[0].GetName() + "=" + ls[0].GetValue()
			} else if len(ls) > 1 {
				t.Errorf("%s has %d labels, want at most 1", f.GetName(), len(ls))
			}
			values[f.GetName()][label] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %+v, want %+v", name, got[name], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("gathered %d families, want %d: %v", len(got), len(want), got)
	}
	for _, c := range []struct {
		family, label string
		want          float64
	}{
		{"l4lb_dns_replies_total", "rcode=NOERROR", 2},
		{"l4lb_dns_replies_total", "rcode=NXDOMAIN", 1},
		{"l4lb_dns_dropped_total", "reason=malformed", 1},
		{"l4lb_dns_dropped_total", "reason=formerr", 0},
		{"l4lb_dns_dropped_total", "reason=in_flight_cap", 0},
		{"l4lb_dns_dropped_total", "reason=loop", 0},
		{"l4lb_dns_forwarded_total", "", 0},
		{"l4lb_dns_zone_names", "", float64(s.Stats().ZoneNames)},
		{"l4lb_dns_zone_updates_total", "kind=full", float64(s.Stats().ZoneRebuilds)},
		{"l4lb_dns_zone_updates_total", "kind=diff", float64(s.Stats().ZoneUpdates)},
	} {
		if v, ok := values[c.family][c.label]; !ok || v != c.want {
			t.Errorf("%s{%s} = %v (present %v), want %v", c.family, c.label, v, ok, c.want)
		}
	}
	if s.Stats().ZoneNames == 0 {
		t.Error("the zone answers no names: the zone gauge is not tested")
	}
}
