package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var _ Interface = (*Kernel)(nil)

// ipvsClient is one IPVS netlink client: genlClient (batched, our own) or
// mobyClient (github.com/moby/ipvs). Errors are the kernel's, unwrapped
// enough for errors.Is(err, unix.EEXIST).
type ipvsClient interface {
	services() ([]Service, error)
	destinations(s Service) ([]Destination, error)
	// do runs IPVS ops (not address ops) in order; errs[i] is op i's.
	do(ops []Op) []error
	close()
}

// KernelConfig says which kernel to open.
type KernelConfig struct {
	Namespace string        // netns path; "" is the caller's
	Interface string        // the dummy interface; default "minuteman"
	Timeout   time.Duration // deadline of each kernel call; default 10s
	Netlink   string        // "genl" (default) or "moby"
}

// Kernel is the real kernel: IPVS over generic netlink and the dummy
// interface's addresses over rtnetlink, in one network namespace. Every call
// has a deadline; a socket that misses it, or fails, is closed and reopened
// on the next call. It is safe for concurrent use.
type Kernel struct {
	cfg KernelConfig

	mu     sync.Mutex // guards ipvs, route and link
	ipvs   ipvsClient // nil when it must be reopened
	route  *netlink.Handle
	rtnl   *rtnlSocket // batched address writes
	link   netlink.Link
	opener func(nsPath string) (ipvsClient, error)
}

// lookupIPVSFamily reports whether the kernel has the "IPVS" generic
// netlink family (nil) or not (ErrNoIPVS). A variable, so that tests can
// stand in for a kernel without IPVS.
var lookupIPVSFamily = func() error {
	done := make(chan error, 1)
	go func() {
		_, err := netlink.GenlFamilyGet("IPVS")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.ENOENT) {
			return ErrNoIPVS
		}
		return fmt.Errorf("look up the IPVS netlink family: %w", err)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("look up the IPVS netlink family: no answer in 5s")
	}
}

// checkIPVS loads ip_vs when it can, then checks that the kernel has IPVS.
func checkIPVS() error {
	if lookupIPVSFamily() == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = exec.CommandContext(ctx, "modprobe", "-q", "ip_vs").Run()
	return lookupIPVSFamily()
}

// OpenKernel opens IPVS and rtnetlink handles in cfg.Namespace. It fails
// with ErrNoIPVS when the kernel has no IPVS.
func OpenKernel(cfg KernelConfig) (*Kernel, error) {
	if cfg.Interface == "" {
		cfg.Interface = DefaultInterface
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultKernelTimeout
	}
	if err := checkIPVS(); err != nil {
		return nil, err
	}
	k := &Kernel{cfg: cfg}
	switch cfg.Netlink {
	case "", "genl":
		k.opener = func(ns string) (ipvsClient, error) { return openGenl(ns, cfg.Timeout) }
	case "moby":
		k.opener = openMoby
	default:
		return nil, fmt.Errorf("unknown IPVS netlink client %q: want genl or moby", cfg.Netlink)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.ipvsLocked(); err != nil {
		return nil, err
	}
	if _, err := k.routeLocked(); err != nil {
		k.ipvs.close()
		return nil, err
	}
	return k, nil
}

func (k *Kernel) ipvsLocked() (ipvsClient, error) {
	if k.ipvs == nil {
		c, err := k.opener(k.cfg.Namespace)
		if err != nil {
			return nil, err
		}
		k.ipvs = c
	}
	return k.ipvs, nil
}

func (k *Kernel) routeLocked() (*netlink.Handle, error) {
	if k.route != nil {
		return k.route, nil
	}
	ns := netns.None()
	if k.cfg.Namespace != "" {
		var err error
		ns, err = netns.GetFromPath(k.cfg.Namespace)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", k.cfg.Namespace, err)
		}
		defer ns.Close()
	}
	var h *netlink.Handle
	var err error
	if k.cfg.Namespace == "" {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	if err := h.SetSocketTimeout(k.cfg.Timeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("set rtnetlink socket timeout: %w", err)
	}
	k.route = h
	return h, nil
}

// withDeadline runs fn with the kernel deadline and returns its result.
// When fn misses it, the sockets are closed (which ends fn's wait) and
// reopened by the next call; fn's goroutine then finishes on its own, with
// the old sockets, and its result is dropped. fn must not touch variables
// the caller reads. The caller holds k.mu.
func withDeadline[T any](k *Kernel, what string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	timer := time.NewTimer(k.cfg.Timeout)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err != nil && isSocketFailure(r.err) {
			k.resetLocked()
		}
		return r.v, r.err
	case <-timer.C:
		k.resetLocked()
		var zero T
		return zero, fmt.Errorf("%s: no answer from the kernel in %s; netlink sockets reopened", what, k.cfg.Timeout)
	}
}

// isSocketFailure tells a broken socket from a kernel's answer.
func isSocketFailure(err error) bool {
	return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EBADF) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, net.ErrClosed)
}

// resetLocked closes the sockets; the next call reopens them.
func (k *Kernel) resetLocked() {
	if k.ipvs != nil {
		k.ipvs.close()
		k.ipvs = nil
	}
	if k.route != nil {
		k.route.Close()
		k.route = nil
	}
	if k.rtnl != nil {
		k.rtnl.close()
		k.rtnl = nil
	}
	k.link = nil
}

// EnsureInterface creates the dummy interface if missing and sets it up.
func (k *Kernel) EnsureInterface() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, err := k.linkLocked(true)
	return err
}

func (k *Kernel) linkLocked(create bool) (netlink.Link, error) {
	h, err := k.routeLocked()
	if err != nil {
		return nil, err
	}
	name := k.cfg.Interface
	link, err := withDeadline(k, "find the dummy interface", func() (netlink.Link, error) {
		l, err := h.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if !create || !errors.As(err, &nf) {
				return nil, err
			}
			if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("create: %w", err)
			}
			if l, err = h.LinkByName(name); err != nil {
				return nil, err
			}
		}
		if l.Type() != "dummy" {
			return nil, fmt.Errorf("interface %s exists and is a %s, not a dummy interface", name, l.Type())
		}
		if create && l.Attrs().Flags&net.FlagUp == 0 {
			if err := h.LinkSetUp(l); err != nil {
				return nil, fmt.Errorf("set up: %w", err)
			}
		}
		return l, nil
	})
	if err != nil {
		return nil, fmt.Errorf("dummy interface %s: %w", k.cfg.Interface, err)
	}
	k.link = link
	return link, nil
}

// Addresses lists the dummy interface's addresses.
func (k *Kernel) Addresses() ([]netip.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	link, err := k.linkLocked(false)
	if err != nil {
		return nil, err
	}
	h := k.route
	out, err := withDeadline(k, "list addresses", func() ([]netip.Addr, error) {
		as, err := h.AddrList(link, netlink.FAMILY_ALL)
		// A dump that raced a change (IPv6 link-local autoconfiguration
		// on a new interface, say) is retried.
		for i := 0; i < 5 && errors.Is(err, netlink.ErrDumpInterrupted); i++ {
			as, err = h.AddrList(link, netlink.FAMILY_ALL)
		}
		if err != nil {
			return nil, err
		}
		var out []netip.Addr
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.Unmap().IsLinkLocalUnicast() {
				out = append(out, ip.Unmap())
			}
		}
		return out, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", k.cfg.Interface, err)
	}
	return out, nil
}

// Services lists every TCP and UDP virtual service.
func (k *Kernel) Services() ([]Service, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, err := k.ipvsLocked()
	if err != nil {
		return nil, err
	}
	return withDeadline(k, "list virtual services", c.services)
}

// Destinations lists a service's real servers.
func (k *Kernel) Destinations(s Service) ([]Destination, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, err := k.ipvsLocked()
	if err != nil {
		return nil, err
	}
	return withDeadline(k, "list real servers of "+s.String(), func() ([]Destination, error) { return c.destinations(s) })
}

// Apply runs ops in order: address ops over rtnetlink, runs of IPVS ops in
// one batch each. Answers that mean "already so" become success or the
// complementary op (add of an existing service becomes an update, and so
// on), which runs in a second pass.
func (k *Kernel) Apply(ops []Op) []error {
	k.mu.Lock()
	defer k.mu.Unlock()
	errs := k.applyLocked(ops)
	var retries []Op
	var at []int
	for i, err := range errs {
		if err == nil {
			continue
		}
		retry, ok := idempotent(ops[i], err)
		switch {
		case ok:
			errs[i] = nil
		case retry != nil:
			retries = append(retries, *retry)
			at = append(at, i)
		}
	}
	if len(retries) > 0 {
		rerrs := k.applyLocked(retries)
		for j, i := range at {
			errs[i] = rerrs[j]
		}
	}
	for i, err := range errs {
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", ops[i], err)
		}
	}
	return errs
}

func (k *Kernel) applyLocked(ops []Op) []error {
	errs := make([]error, len(ops))
	isAddr := func(op Op) bool { return op.Kind == AddAddress || op.Kind == DeleteAddress }
	for i := 0; i < len(ops); {
		j := i
		for j < len(ops) && isAddr(ops[j]) == isAddr(ops[i]) {
			j++
		}
		if isAddr(ops[i]) {
			copy(errs[i:j], k.addressesLocked(ops[i:j]))
		} else {
			copy(errs[i:j], k.ipvsDoLocked(ops[i:j]))
		}
		i = j
	}
	return errs
}

func (k *Kernel) ipvsDoLocked(ops []Op) []error {
	errs := make([]error, len(ops))
	c, err := k.ipvsLocked()
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	if g, ok := c.(*genlClient); ok {
		// The genl client keeps its own per-exchange deadline and reopens
		// its socket itself.
		return g.do(ops)
	}
	for i := range ops {
		client, err := k.ipvsLocked()
		if err != nil {
			errs[i] = err
			continue
		}
		op := ops[i : i+1]
		_, errs[i] = withDeadline(k, op[0].String(), func() (struct{}, error) { return struct{}{}, client.do(op)[0] })
	}
	return errs
}

// addressesLocked adds or deletes addresses of the dummy interface, many
// per datagram.
func (k *Kernel) addressesLocked(ops []Op) []error {
	fail := func(err error) []error {
		errs := make([]error, len(ops))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	link := k.link
	if link == nil {
		var err error
		if link, err = k.linkLocked(false); err != nil {
			return fail(err)
		}
	}
	if k.rtnl == nil || k.rtnl.fd < 0 {
		s, err := openRtnl(k.cfg.Namespace, k.cfg.Timeout)
		if err != nil {
			return fail(err)
		}
		k.rtnl = s
	}
	errs := k.rtnl.do(link.Attrs().Index, ops)
	for _, err := range errs {
		if errors.Is(err, unix.ENODEV) {
			k.link = nil // the interface went away: look it up again
			break
		}
	}
	return errs
}

// Close closes the sockets.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.resetLocked()
	return nil
}
