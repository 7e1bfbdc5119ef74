package docker

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/vip"
)

func TestParseLabels(t *testing.T) {
	cases := []struct {
		name    string
		labels  map[string]string
		notOurs bool
		want    string // fmt of the ports: "8080/tcp=[/a:80 /b:81] check=http:///hz"
		check   func(t *testing.T, l Labels)
		wantErr []string
	}{
		{name: "no labels", labels: nil, notOurs: true},
		{name: "other labels only", labels: map[string]string{"com.example.x": "1", "l4lbvip.80": "/a:80"}, notOurs: true},
		{name: "one VIP", labels: map[string]string{"l4lb.vip.8080": "/dcos-101/app2:10000"}, want: "8080/tcp=[/dcos-101/app2:10000]"},
		{name: "several VIPs and ports", labels: map[string]string{
			"l4lb.vip.8080": "/a:80, /b:81,11.1.1.1:80", "l4lb.vip.53/udp": "/dns:53", "l4lb.vip.9000/tcp": "tcp:///c:90",
		}, want: "53/udp=[udp:///dns:53] 8080/tcp=[/a:80 /b:81 11.1.1.1:80] 9000/tcp=[/c:90]"},
		{name: "udp scheme on udp port", labels: map[string]string{"l4lb.vip.53/udp": "udp:///dns:53"}, want: "53/udp=[udp:///dns:53]"},
		{name: "checks", labels: map[string]string{
			"l4lb.vip.8080": "/a:80", "l4lb.check.8080": "http:///healthz", "l4lb.vip.9000": "/b:90", "l4lb.check.9000/tcp": "tcp",
			"l4lb.vip.7000": "/c:70", "l4lb.check.7000": "none",
		}, want: "7000/tcp=[/c:70] 8080/tcp=[/a:80] check=http:///healthz 9000/tcp=[/b:90] check=tcp"},
		{name: "all optional labels", labels: map[string]string{
			"l4lb.vip.80": "/a:80", "l4lb.framework": "dcos-101", "l4lb.weight": "0", "l4lb.scheduler": "RR",
			"l4lb.persistence": "300", "l4lb.public": "true", "l4lb.network": "lan_1.x",
		}, want: "80/tcp=[/a:80]", check: func(t *testing.T, l Labels) {
			if l.Framework != "dcos-101" || l.Weight == nil || *l.Weight != 0 || l.Scheduler != "rr" || l.Persistence != 300 || !l.Public || l.Network != "lan_1.x" {
				t.Errorf("labels = %+v", l)
			}
		}},
		{name: "check defaults", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.check.80": "http://hz"}, check: func(t *testing.T, l Labels) {
			c := l.Ports[0].Check
			if c.Kind != health.HTTP || c.Path != "/hz" || c.Interval != health.DefaultInterval || c.Rise != health.DefaultRise {
				t.Errorf("check = %+v", c)
			}
		}},

		{name: "port not a number", labels: map[string]string{"l4lb.vip.80x": "/a:80"}, wantErr: []string{`label l4lb.vip.80x: port "80x": want the container port`}},
		{name: "port zero", labels: map[string]string{"l4lb.vip.0": "/a:80"}, wantErr: []string{`label l4lb.vip.0: port "0"`}},
		{name: "port too big", labels: map[string]string{"l4lb.vip.65536": "/a:80"}, wantErr: []string{`port "65536"`}},
		{name: "leading zero", labels: map[string]string{"l4lb.vip.080": "/a:80"}, wantErr: []string{`port "080"`}},
		{name: "no port", labels: map[string]string{"l4lb.vip.": "/a:80"}, wantErr: []string{`label l4lb.vip.: port ""`}},
		{name: "bad protocol", labels: map[string]string{"l4lb.vip.80/sctp": "/a:80"}, wantErr: []string{`protocol "sctp": want tcp or udp`}},
		{name: "upper-case protocol", labels: map[string]string{"l4lb.vip.80/UDP": "/a:80"}, wantErr: []string{`protocol "UDP"`}},
		{name: "same port twice", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.vip.80/tcp": "/b:80"}, wantErr: []string{"label l4lb.vip.80/tcp: port 80/tcp is also given by label l4lb.vip.80"}},
		{name: "empty VIP", labels: map[string]string{"l4lb.vip.80": " "}, wantErr: []string{"label l4lb.vip.80: empty"}},
		{name: "stray comma", labels: map[string]string{"l4lb.vip.80": "/a:80,"}, wantErr: []string{"VIP 2 is empty"}},
		{name: "bad VIP", labels: map[string]string{"l4lb.vip.80": "/a"}, wantErr: []string{`label l4lb.vip.80: vip "/a"`}},
		{name: "scheme disagrees", labels: map[string]string{"l4lb.vip.80": "udp:///a:80"}, wantErr: []string{`vip "udp:///a:80" is udp but the port is tcp`}},
		{name: "VIP twice", labels: map[string]string{"l4lb.vip.80": "/a:80,/A:80"}, wantErr: []string{`vip "/A:80" is given twice`}},
		{name: "check without VIP", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.check.81": "tcp"}, wantErr: []string{"label l4lb.check.81: no label l4lb.vip.81 gives port 81/tcp a VIP"}},
		{name: "check of a UDP port", labels: map[string]string{"l4lb.vip.53/udp": "/d:53", "l4lb.check.53/udp": "tcp"}, wantErr: []string{"cannot check a UDP port"}},
		{name: "bad check", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.check.80": "icmp"}, wantErr: []string{`label l4lb.check.80: check "icmp": unknown check`}},
		{name: "check with host", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.check.80": "http://10.0.0.1:80/x"}, wantErr: []string{"looks like a host and port"}},
		{name: "unknown label", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.wieght": "2"}, wantErr: []string{"label l4lb.wieght: unknown (known: l4lb.vip.<port>[/udp]"}},
		{name: "labels without a VIP", labels: map[string]string{"l4lb.weight": "2"}, wantErr: []string{"no label l4lb.vip.<port> says which VIP"}},
		{name: "bad weight", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.weight": "70000"}, wantErr: []string{`label l4lb.weight: "70000": above 65535`}},
		{name: "negative weight", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.weight": "-1"}, wantErr: []string{`label l4lb.weight: "-1": want a number`}},
		{name: "bad scheduler", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.scheduler": "fast"}, wantErr: []string{`label l4lb.scheduler: scheduler "fast": want one of`}},
		{name: "bad persistence", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.persistence": "5m"}, wantErr: []string{`label l4lb.persistence: "5m"`}},
		{name: "bad public", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.public": "yes"}, wantErr: []string{`label l4lb.public: "yes": want "true" or "false"`}},
		{name: "bad framework", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.framework": "a b"}, wantErr: []string{`label l4lb.framework: framework "a b"`}},
		{name: "empty framework", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.framework": ""}, wantErr: []string{"label l4lb.framework: empty"}},
		{name: "bad network", labels: map[string]string{"l4lb.vip.80": "/a:80", "l4lb.network": "-lan"}, wantErr: []string{`label l4lb.network: network name "-lan"`}},
		{name: "too long", labels: map[string]string{"l4lb.vip.80": strings.Repeat("/a:80,", 1000)}, wantErr: []string{"label l4lb.vip.80: value of 6000 bytes"}},
		{name: "every problem at once", labels: map[string]string{"l4lb.vip.80x": "/a:80", "l4lb.vip.81": "/b", "l4lb.weight": "x"},
			wantErr: []string{"l4lb.vip.80x", "l4lb.vip.81", "l4lb.weight"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, ok, err := ParseLabels(tc.labels)
			if tc.notOurs {
				if ok || err != nil {
					t.Fatalf("ParseLabels = %v, %v; want not ours", ok, err)
				}
				return
			}
			if !ok {
				t.Fatal("ParseLabels says the labels are not ours")
			}
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ParseLabels = %+v, want an error", l)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLabels: %v", err)
			}
			if tc.want != "" {
				if got := describePorts(l); got != tc.want {
					t.Errorf("ports = %s\nwant    %s", got, tc.want)
				}
			}
			if tc.check != nil {
				tc.check(t, l)
			}
		})
	}
}

func describePorts(l Labels) string {
	var parts []string
	for _, p := range l.Ports {
		s := p.Key() + "=["
		for i, v := range p.VIPs {
			if i > 0 {
				s += " "
			}
			s += v.String()
		}
		s += "]"
		if p.Check.Kind != "" {
			s += " check=" + p.Check.String()
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func TestLabelsLocals(t *testing.T) {
	l, _, err := ParseLabels(map[string]string{
		"l4lb.vip.8080": "/dcos-101/app2:10000,11.1.1.1:80", "l4lb.vip.53/udp": "/dns:53",
		"l4lb.check.8080": "http:///healthz", "l4lb.framework": "dcos", "l4lb.weight": "3", "l4lb.scheduler": "rr", "l4lb.persistence": "60",
	})
	if err != nil {
		t.Fatal(err)
	}
	backend := map[string]netip.AddrPort{"8080/tcp": netip.MustParseAddrPort("10.0.0.5:31000")}
	locals, err := l.Locals(func(p Port) (netip.AddrPort, bool) { ap, ok := backend[p.Key()]; return ap, ok })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, lo := range locals {
		got = append(got, fmt.Sprintf("%s fw=%s w=%d s=%s p=%d check=%s", lo.Key(), lo.Framework, lo.Weight, lo.Scheduler, lo.Persistence, lo.Check))
	}
	want := []string{
		"/dcos-101/app2:10000 10.0.0.5:31000 fw=dcos w=3 s=rr p=60 check=http:///healthz",
		"11.1.1.1:80 10.0.0.5:31000 fw= w=3 s=rr p=60 check=http:///healthz",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("locals =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if locals[0].VIP.Protocol != vip.TCP {
		t.Errorf("protocol %q", locals[0].VIP.Protocol)
	}
}

// FuzzParseLabels: the label parser never panics; whatever it accepts
// gives ports sorted and distinct, each with at least one VIP of the port's
// protocol, and Locals built from them pass source.Entry.Parse again.
func FuzzParseLabels(f *testing.F) {
	f.Add("l4lb.vip.8080", "/dcos-101/app2:10000", "l4lb.check.8080", "http:///healthz", "l4lb.weight", "2")
	f.Add("l4lb.vip.53/udp", "udp:///dns:53,/dns2:53", "l4lb.network", "lan", "l4lb.public", "true")
	f.Add("l4lb.vip.80", "11.1.1.1:80", "l4lb.scheduler", "wrr", "l4lb.persistence", "10")
	f.Add("l4lb.vip.80/udp", "tcp:///a:80", "l4lb.check.80/udp", "tcp", "l4lb.framework", "x y")
	f.Add("l4lb.vip.", ",", "l4lb.check.", "http://", "l4lb.", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		labels := map[string]string{k1: v1, k2: v2, k3: v3}
		l, ok, err := ParseLabels(labels)
		if !ok {
			if err != nil {
				t.Fatalf("not ours, with an error: %v", err)
			}
			for k := range labels {
				if strings.HasPrefix(k, LabelPrefix) {
					t.Fatalf("label %q is ours, but ParseLabels says none is", k)
				}
			}
			return
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error with no message")
			}
			return
		}
		if len(l.Ports) == 0 {
			t.Fatal("accepted with no port")
		}
		for i, p := range l.Ports {
			if prev := l.Ports[max(i-1, 0)]; i > 0 && (prev.Port > p.Port || prev.Port == p.Port && prev.Protocol >= p.Protocol) {
				t.Fatalf("ports not sorted and distinct: %v", l.Ports)
			}
			if p.Port == 0 || len(p.VIPs) == 0 {
				t.Fatalf("port %+v", p)
			}
			for _, v := range p.VIPs {
				if v.Protocol != p.Protocol {
					t.Fatalf("port %s has VIP %s", p.Key(), v)
				}
			}
		}
		locals, err := l.Locals(func(p Port) (netip.AddrPort, bool) {
			return netip.AddrPortFrom(netip.MustParseAddr("10.1.2.3"), p.Port), true
		})
		if err != nil {
			t.Fatalf("labels accepted but Locals fails: %v", err)
		}
		keys := map[string]bool{}
		for _, lo := range locals {
			if keys[lo.Key()] {
				t.Fatalf("key %s twice", lo.Key())
			}
			keys[lo.Key()] = true
			back, err := lo.Entry().Parse()
			if err != nil {
				t.Fatalf("Local %+v does not parse back: %v", lo, err)
			}
			if back != lo {
				t.Fatalf("round trip %+v -> %+v", lo, back)
			}
		}
	})
}
