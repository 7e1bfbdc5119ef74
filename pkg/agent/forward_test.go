package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// startUnbound runs Debian's unbound (installed by make deps) on
// 127.0.0.1:port, answering www.upstream.test with 192.0.2.7 from local
// data, until the test ends. A missing unbound fails the test.
func startUnbound(t *testing.T, port int) {
	t.Helper()
	bin, err := exec.LookPath("unbound")
	if err != nil {
		bin = "/usr/sbin/unbound"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("unbound is needed as the real upstream (make deps installs it): %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "unbound.conf")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`server:
	interface: 127.0.0.1
	port: %d
	do-daemonize: no
	username: ""
	chroot: ""
	directory: "%s"
	pidfile: ""
	use-syslog: no
	logfile: ""
	verbosity: 1
	access-control: 127.0.0.0/8 allow
	do-not-query-localhost: no
	module-config: "iterator"
	local-zone: "upstream.test." static
	local-data: "www.upstream.test. 300 IN A 192.0.2.7"
remote-control:
	control-enable: no
`, port, dir)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", conf)
	out, _ := os.Create(filepath.Join(dir, "unbound.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unbound: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "unbound.log"))
			t.Logf("unbound log:\n%s", b)
		}
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	eventually(t, "unbound answering on "+addr, func() bool {
		r, err := query(addr, "www.upstream.test.")
		return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1
	})
}

// query asks addr for name's A record over UDP.
func query(addr, name string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// TestDNSForwardsToARealUpstream: a running agent answers a name outside
// its zone with what a real resolver (unbound, on an address the test
// owns) answers, and keeps names in its zone to itself.
func TestDNSForwardsToARealUpstream(t *testing.T) {
	upstream := freeLoopbackPort(t)
	startUnbound(t, upstream)
	o := loopbackAgent(t, "node-a")
	o.DNSForward = true
	o.DNSUpstreams = []string{"127.0.0.1:" + strconv.Itoa(upstream)}
	// Ready means the DNS server listens.
	waitReady(t, startAgent(t, o))
	r, err := query(o.DNSListen[0], "www.upstream.test.")
	if err != nil {
		t.Fatalf("query the agent, ready: %v", err)
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("the agent answered %s with %d records, want the upstream's one:\n%v", dns.RcodeToString[r.Rcode], len(r.Answer), r)
	}
	if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != "192.0.2.7" {
		t.Errorf("answer %v, want www.upstream.test. A 192.0.2.7 from unbound", r.Answer[0])
	}
	if !r.RecursionAvailable {
		t.Error("a forwarded answer without RA")
	}
	r, err = query(o.DNSListen[0], "nothing.here.l4lb.thisdcos.directory.")
	if err != nil {
		t.Fatalf("query the agent: %v", err)
	}
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("a name in the agent's zone with no VIP: %s, want NXDOMAIN from the agent itself", dns.RcodeToString[r.Rcode])
	}
}
