package bed

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

var nsCounter atomic.Int64

// Netns is a network namespace that a test created; it is deleted, with every
// process started in it, when the test ends.
type Netns struct {
	Name   string
	handle netns.NsHandle
}

// NewNetns creates a network namespace named after prefix (made unique), with
// its loopback up.
func NewNetns(t T, prefix string) *Netns {
	t.Helper()
	if !InGuest() {
		t.Fatalf("bed.NewNetns outside the kernel test bed: call bed.Main from TestMain")
	}
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), nsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("create network namespace %s: %v: %s", name, err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open network namespace %s: %v", name, err)
	}
	n := &Netns{Name: name, handle: h}
	t.Cleanup(func() { n.destroy(t) })
	n.MustRun(t, "ip", "link", "set", "lo", "up")
	return n
}

// destroy deletes the namespace. Processes started with Start are killed by
// their own cleanup, which runs first (cleanups run last-in first-out).
func (n *Netns) destroy(t T) {
	n.handle.Close()
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Logf("delete network namespace %s: %v: %s", n.Name, err, out)
	}
}

// Handle is the namespace's handle, for netlink.NewHandleAt and the like. It
// stays valid until the test ends.
func (n *Netns) Handle() netns.NsHandle { return n.handle }

// Path is the namespace's bind-mount path, for APIs that open a namespace by
// path (moby/ipvs's New).
func (n *Netns) Path() string { return "/run/netns/" + n.Name }

// Do runs fn on a thread that is inside the namespace. Sockets created in fn
// stay in the namespace after Do returns.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// This goroutine's thread is moved into the namespace and never
		// moved back: it ends locked, so the runtime discards the thread.
		runtime.LockOSThread()
		if err := netns.Set(n.handle); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// command makes a command that runs inside the namespace. nsenter switches
// only the network namespace, where `ip netns exec` also remounts /sys,
// which is slow in the guest.
func (n *Netns) command(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--"}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (n *Netns) Run(args ...string) (string, error) {
	cmd := n.command(args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *Netns) MustRun(t T, args ...string) string {
	t.Helper()
	out, err := n.Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Listen opens a listener inside the namespace.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet listener inside the namespace.
func (n *Netns) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Dial opens a connection from inside the namespace.
func (n *Netns) Dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

// HTTPClient returns an HTTP client whose connections are made inside the
// namespace, one connection a request (no keep-alive), so that every request
// is a new connection through the load balancer.
func (n *Netns) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				d := timeout
				if dl, ok := ctx.Deadline(); ok {
					d = time.Until(dl)
				}
				return n.Dial(network, addr, d)
			},
		},
	}
}

// Link joins two namespaces with a veth pair; aAddr and bAddr are CIDR
// addresses ("10.1.0.1/24") given to each end, or "" for none. It returns the
// names of the two ends.
func Link(t T, a *Netns, aAddr string, b *Netns, bAddr string) (string, string) {
	t.Helper()
	i := nsCounter.Add(1)
	aName, bName := fmt.Sprintf("va%d", i), fmt.Sprintf("vb%d", i)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName, Namespace: netlink.NsFd(a.handle)}, PeerName: bName, PeerNamespace: netlink.NsFd(b.handle)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s/%s between %s and %s: %v", aName, bName, a.Name, b.Name, err)
	}
	for _, end := range []struct {
		ns         *Netns
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		if end.addr != "" {
			end.ns.MustRun(t, "ip", "addr", "add", end.addr, "dev", end.name)
		}
		end.ns.MustRun(t, "ip", "link", "set", end.name, "up")
	}
	return aName, bName
}

// Process is a command running in the background inside a namespace.
type Process struct {
	Name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// Start runs a command in the background inside the namespace; its output
// goes to a log file that is shown when the test fails. It is killed when the
// test ends, if it is still running.
func (n *Netns) Start(t T, name string, args ...string) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create log for %s: %v", name, err)
	}
	cmd := n.command(args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s in %s: %v", name, n.Name, err)
	}
	p := &Process{Name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- log of %s in %s:\n%s", name, n.Name, p.Log())
		}
	})
	return p
}

// Log returns what the process has written so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// Signal sends a signal to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill kills the process and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Wait waits for the process to end, at most until ctx is done.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
