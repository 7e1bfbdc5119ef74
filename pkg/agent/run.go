package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/dns"
	"github.com/l4lb/l4lb/gossip"
	"github.com/l4lb/l4lb/ipvs"
	"github.com/l4lb/l4lb/ipvs/nftables"
	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/source"
	"github.com/l4lb/l4lb/pkg/source/docker"
	"github.com/l4lb/l4lb/vip"
)

// Options are the agent's settings, as `l4lb agent` flags give them.
type Options struct {
	NodeName      string
	Bind          string
	Advertise     string
	GossipPort    int
	Join          []string // "host" or "host:port"; the port defaults to GossipPort
	GossipKeyFile string
	GossipLabel   string
	APIListen     string
	StatsListen   string // the stats page's address:port; off when empty
	DNSListen     []string
	DNSUpstreams  []string
	DNSForward    bool
	DNSTTL        time.Duration
	Domain        string
	VIPCIDR       netip.Prefix
	VIP6CIDR      netip.Prefix
	IPVIPCIDRs    []netip.Prefix // ranges of IP VIPs, masqueraded like named ones
	Interface     string
	ServicesDir   string
	// DockerEndpoint, when set, makes the local Docker engine a backend
	// source: containers labelled l4lb.vip.<port>=<VIP spec>.
	DockerEndpoint string
	StateDir       string
	DataPlane      string // "ipvs", "nftables", "auto" (IPVS where the kernel has it, else nftables) or "none"
	ResyncPeriod   time.Duration
	DrainTimeout   time.Duration
	// LeaveOnTerminate makes the end of Run a leave: peers drop this
	// node's backends at once. Without it, stopping is a restart: the
	// kernel keeps serving and peers find out through failure detection.
	LeaveOnTerminate bool
	// PublicAddrs make the node public: VIPs with a public port are served
	// on these addresses too (--public-address).
	PublicAddrs []netip.Addr
	// Reload, when it receives, makes the agent reread the gossip key file
	// (key rotation) and rescan the services directory.
	Reload <-chan struct{}
	Log    *logrus.Entry
}

// dnsDummyRange is the range whose DNS listen addresses the agent holds on
// its dummy interface (198.51.100.1 is DC/OS's).
var dnsDummyRange = netip.MustParsePrefix("198.51.100.0/24")

func (o *Options) check() error {
	if o.NodeName == "" {
		return errors.New("--node-name is empty and the host name is unknown")
	}
	switch o.DataPlane {
	case "ipvs", "nftables", "auto", "none":
	default:
		return fmt.Errorf("--dataplane %q: want ipvs, nftables, auto or none", o.DataPlane)
	}
	if o.StateDir == "" {
		return errors.New("--state-dir is empty")
	}
	if o.GossipPort < 0 || o.GossipPort > 65535 {
		return fmt.Errorf("--gossip-port %d: want 0 to 65535", o.GossipPort)
	}
	if len(o.DNSListen) == 0 {
		return errors.New("--dns-listen is empty")
	}
	for _, a := range o.DNSListen {
		if _, err := netip.ParseAddrPort(a); err != nil {
			return fmt.Errorf("--dns-listen %q: want ip:port: %w", a, err)
		}
	}
	if _, _, err := net.SplitHostPort(o.APIListen); err != nil {
		return fmt.Errorf("--api-listen %q: %w", o.APIListen, err)
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	return nil
}

// ReadKeyFile reads gossip keys: one base64-encoded 16, 24 or 32-byte key a
// line, the first the one that encrypts; blank lines and lines starting with
// # are skipped. Several keys serve rotation: add the new key second, reload
// every node, move it first, reload, then remove the old one.
func ReadKeyFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key file: %w", err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("gossip key file %s line %d: not base64: %w", path, i+1, err)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("gossip key file %s line %d: key of %d bytes, want 16, 24 or 32 (l4lb keygen makes one)", path, i+1, n)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip key file %s holds no key", path)
	}
	return keys, nil
}

// seeds turns --join values into host:port addresses.
func seeds(join []string, port int) []string {
	out := make([]string, 0, len(join))
	for _, j := range join {
		if _, _, err := net.SplitHostPort(j); err == nil {
			out = append(out, j)
			continue
		}
		out = append(out, net.JoinHostPort(strings.Trim(j, "[]"), strconv.Itoa(port)))
	}
	return out
}

// Run runs the agent until ctx is done, then leaves the cluster gracefully.
func Run(ctx context.Context, o Options) error {
	p, err := build(o)
	if err != nil {
		return err
	}
	defer p.close()
	s, err := p.start(ctx)
	if err != nil {
		return err
	}
	runErr := p.serve(s)
	p.stop(s)
	return runErr
}

// parts are the agent's components as build assembles them, before any of
// them runs.
type parts struct {
	o        Options // checked, with the data plane that opened
	log      *logrus.Entry
	resolver *dns.Server
	cluster  *gossip.Cluster
	plane    DataPlane // nil with --dataplane none
	core     *Core
	node     *localNode
	reg      *prometheus.Registry
	applied  *appliedReporter
	// gossipStart is when gossip started (unix ns; 0 before): the join
	// grace counts from then, not from the slower setup before.
	gossipStart atomic.Int64
	// closers undo build, in the order it built; close runs them backwards.
	closers []func()
}

// close closes what build opened, last opened first.
func (p *parts) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// build checks o and assembles the agent: the state directory and its
// store and claims, DNS, gossip, the data plane, the core, the health
// checker and the local node, with their metrics. Nothing runs yet; on
// error, what was opened is closed.
func build(o Options) (_ *parts, err error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	log := o.Log.WithField("node", o.NodeName)
	p := &parts{log: log}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	unlock, err := lockStateDir(o.StateDir)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, unlock)
	var keys [][]byte
	if o.GossipKeyFile != "" {
		if keys, err = ReadKeyFile(o.GossipKeyFile); err != nil {
			return nil, err
		}
	}
	store, err := source.OpenStore(o.StateDir, log)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, func() {
		if err := store.Close(); err != nil {
			log.WithError(err).Warn("closing the registration store")
		}
	})
	if rec := store.Recovered(); rec != "" {
		log.WithField("file", rec).Warn("registrations that could not be read were set aside; the rest are served")
	}
	claims := NewClaimBook(filepath.Join(o.StateDir, "claims.json"))
	if err := claims.Load(); err != nil {
		return nil, err
	}
	p.closers = append(p.closers, func() {
		if err := claims.Close(); err != nil {
			log.WithError(err).Warn("closing the VIP address claims")
		}
	})
	vipCfg := vip.Config{Domain: o.Domain, V4: o.VIPCIDR, V6: o.VIP6CIDR}

	resolver, err := dns.NewServer(dns.Config{Domain: o.Domain, TTL: o.DNSTTL, Listen: o.DNSListen, Upstreams: o.DNSUpstreams, Forward: o.DNSForward, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	cluster, err := gossip.New(gossip.Config{
		NodeName: o.NodeName, BindAddr: o.Bind, BindPort: o.GossipPort, AdvertiseAddr: o.Advertise,
		Join: seeds(o.Join, o.GossipPort), Keys: keys, Label: o.GossipLabel, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}

	var core *Core
	var plane DataPlane
	coreCfg := CoreConfig{Node: o.NodeName, VIP: vipCfg, DNS: resolver, Claims: claims, Log: log,
		StateMerged: stateMerged(cluster, seeds(o.Join, o.GossipPort), &p.gossipStart, joinGrace)}
	if o.DataPlane != "none" {
		plane, o.DataPlane, err = openPlane(o, vipCfg, log, func(t *vip.Table) { core.Programmed(t) })
		if err != nil {
			return nil, fmt.Errorf("data plane: %w", err)
		}
		// On every way out, after the goroutines have stopped: the
		// kernel keeps serving (services, addresses, rules), so that a
		// restart cuts nothing. `l4lb agent --cleanup` removes them.
		p.closers = append(p.closers, func() {
			if err := plane.Close(false); err != nil {
				log.WithError(err).Warn("data plane close failed")
			}
		})
		coreCfg.Plane = plane
	}
	reg := prometheus.NewRegistry()
	progHist := newProgrammingHistogram()
	reg.MustRegister(progHist)
	coreCfg.Observe = func(s Stage, d time.Duration) { progHist.WithLabelValues(string(s)).Observe(d.Seconds()) }
	coreCfg.Room = cluster.Room
	coreCfg.MinRebuildInterval = minRebuildInterval
	applied := newAppliedReporter(cluster, plane)
	coreCfg.OnApplied = applied.applied
	core = NewCore(coreCfg, cluster)
	checker := health.New(health.Config{Log: log, OnChange: func(key string, healthy bool, reason string) {
		core.HealthChanged(map[string]bool{key: healthy})
	}})
	p.closers = append(p.closers, checker.Close)
	a := &localNode{core: core, store: store, cluster: cluster, plane: plane, checker: checker, log: log,
		seeded: seedReached(cluster, seeds(o.Join, o.GossipPort)), leave: make(chan struct{}, 1), public: o.PublicAddrs, dnsServing: new(atomic.Bool)}
	a.update(SourceAPI, store.List(), nil)
	store.OnChange(a.storeChanged)

	if plane != nil {
		reg.MustRegister(plane.Collector())
	}
	p.o, p.resolver, p.cluster, p.plane, p.core, p.node, p.reg, p.applied = o, resolver, cluster, plane, core, a, reg, applied
	return p, nil
}

// started is the running agent: its goroutines, by name, and what stop
// shuts down.
type started struct {
	done    <-chan struct{} // the agent's context ends
	cancel  context.CancelFunc
	running *components
	errc    chan error // the first failure stops the agent; later ones are logged
	log     *logrus.Entry
	apiSrv  *http.Server
	dir     *source.Dir // nil without --services-dir
}

// goRun runs fn as the component name until it returns.
func (s *started) goRun(name string, fn func() error) {
	s.running.start(name)
	go func() {
		defer s.running.done(name)
		if err := fn(); err != nil {
			err = fmt.Errorf("%s: %w", name, err)
			select {
			case s.errc <- err:
			default:
				s.log.WithError(err).Error("agent component failed")
			}
		}
	}()
}

// start publishes this node's first record, starts gossip and runs the
// components until ctx ends or stop: the local sources, the data plane,
// the core, the stats page, the API and DNS. On error, what it started is
// stopped (within shutdownBound).
func (p *parts) start(ctx context.Context) (*started, error) {
	o, log, a, core, cluster, plane, reg := p.o, p.log, p.node, p.core, p.cluster, p.plane, p.reg
	src := statsSources{core: core}
	ctx, cancel := context.WithCancel(ctx)
	s := &started{done: ctx.Done(), cancel: cancel, running: &components{}, errc: make(chan error, 1), log: log}
	running, goRun := s.running, s.goRun

	// This node's first record holds what its local sources hold now, so
	// that peers that kept its backends through a restart switch to a
	// record that still has them (the services directory is read once
	// here, and Docker's first listing is waited for, up to
	// dockerFirstListing).
	var dir *source.Dir
	if o.ServicesDir != "" {
		dir = source.NewDir(source.DirConfig{Path: o.ServicesDir, Log: log})
		a.dir = dir
		s.dir = dir
		src.dir = dir.Stats
		set, _ := dir.Scan()
		a.replace(SourceDir, set)
	}
	if o.DockerEndpoint != "" {
		addr, err := nodeAddr(o)
		if err != nil {
			cancel()
			return nil, err
		}
		ds, err := docker.New(docker.Config{Endpoint: o.DockerEndpoint, NodeAddr: addr, Log: log})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("docker source: %w", err)
		}
		a.docker = ds
		src.docker = ds.Stats
		listed := make(chan struct{})
		var once sync.Once
		goRun("docker source", func() error {
			defer ds.Close()
			return ds.Run(ctx, func(set []source.Local, removed []string) {
				a.updateDocker(set, removed)
				once.Do(func() { close(listed) })
			})
		})
		select {
		case <-listed:
		case <-time.After(dockerFirstListing):
			log.WithField("reason", "no answer from the Docker engine within "+dockerFirstListing.String()).
				Warn("publishing this node's first record without Docker's backends; they follow")
		}
	}
	core.PublishNow()

	// Gossip only now: if its port is taken, the sources started above stop.
	if err := cluster.Start(ctx); err != nil {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), shutdownBound)
		defer scancel()
		running.wait(sctx)
		return nil, fmt.Errorf("gossip: %w", err)
	}
	p.gossipStart.Store(time.Now().UnixNano())
	if dir != nil {
		goRun("services directory", func() error {
			return dir.RunDelta(ctx, func(set []source.Local, removed []string) {
				a.update(SourceDir, set, removed)
			})
		})
	}
	reg.MustRegister(newCollector(src), cluster.Collector(), p.resolver.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if plane != nil {
		goRun("data plane", func() error { return plane.Run(ctx) })
	}
	goRun("agent", func() error { return core.Run(ctx) })
	goRun("applied report", func() error { p.applied.run(ctx); return nil })
	goRun("memory trim", func() error { trimMemory(ctx, log.WithField("component", "agent")); return nil })
	goRun("stats page", func() error { return serveStats(ctx, o, a.VIPs, a.vipFigures, log) })
	reg.MustRegister(newVIPCollector(a.vipFigures))

	ln, err := net.Listen("tcp", o.APIListen)
	if err != nil {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), shutdownBound)
		defer scancel()
		running.wait(sctx)
		_ = cluster.Shutdown()
		return nil, fmt.Errorf("API: listen on %s: %w", o.APIListen, err)
	}
	apiSrv := &http.Server{Handler: api.NewHandler(a, reg, log), ReadHeaderTimeout: 5 * time.Second}
	s.apiSrv = apiSrv
	goRun("API", func() error {
		if err := apiSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	log.WithFields(logrus.Fields{"api": o.APIListen, "dataplane": o.DataPlane, "state_dir": o.StateDir}).Info("agent started")
	goRun("seed watch", func() error { warnUnseeded(ctx, log, a.seeded, 30*time.Second); return nil })

	// DNS listens once the first sync has put its addresses on the dummy
	// interface; readiness is announced once the cluster state is merged
	// and the kernel synced.
	goRun("DNS", func() error {
		if !waitFor(ctx, func() bool { ok, _ := core.Synced(); return ok }) {
			return nil
		}
		if err := p.resolver.Start(ctx); err != nil {
			if o.DataPlane != "ipvs" {
				return fmt.Errorf("%w (with --dataplane %s no dummy interface holds the DNS address: give --dns-listen an address this host has)", err, o.DataPlane)
			}
			return err
		}
		a.dnsServing.Store(true)
		log.WithField("listen", strings.Join(o.DNSListen, ",")).Info("DNS serving")
		if waitFor(ctx, func() bool { ok, _ := a.Ready(); return ok }) {
			log.Info("agent ready")
			_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
		}
		return nil
	})
	return s, nil
}

// serve reloads on o.Reload until the agent's context ends, a component
// fails, another agent has this node's name or an operator asks the node
// to leave (which sets LeaveOnTerminate); it returns the failure, if any.
func (p *parts) serve(s *started) error {
	for {
		select {
		case <-s.done:
			return nil
		case err := <-s.errc:
			p.log.WithError(err).Error("agent component failed; stopping")
			return err
		case err := <-p.cluster.NameConflict():
			// gossip has stopped; the restart in stop only returns
			p.log.WithError(err).Error("another live agent has this --node-name; stopping")
			return err
		case <-p.o.Reload:
			p.node.reload(p.o.GossipKeyFile, s.dir)
		case <-p.node.leave:
			p.o.LeaveOnTerminate = true
			return nil
		}
	}
}

// stop leaves the cluster (LeaveOnTerminate) or announces a restart, then
// stops the API, DNS and every component, waiting up to shutdownBound for
// them. close then closes what build opened.
func (p *parts) stop(s *started) {
	log := p.log
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	if p.o.LeaveOnTerminate {
		log.Info("agent stopping: leaving the cluster for good")
		if err := p.cluster.Leave(5 * time.Second); err != nil {
			log.WithError(err).Warn("graceful leave failed")
		}
	} else {
		log.Info("agent stopping for a restart; the kernel keeps serving and peers keep this node's backends for the restart grace (l4lb leave, or --leave-on-terminate, to leave for good)")
		if err := p.cluster.Restart(2 * time.Second); err != nil {
			log.WithError(err).Warn("gossip restart announcement failed")
		}
	}
	s.cancel()
	sctx, scancel := context.WithTimeout(context.Background(), shutdownBound)
	defer scancel()
	_ = s.apiSrv.Shutdown(sctx)
	_ = p.resolver.Shutdown(sctx)
	if stuck := s.running.wait(sctx); len(stuck) > 0 {
		log.WithFields(logrus.Fields{"components": strings.Join(stuck, ", "), "reason": "did not stop within " + shutdownBound.String()}).
			Error("abandoning components that do not stop")
	}
	log.Info("agent stopped")
}

// shutdownBound is how long stopping waits for the agent's components.
const shutdownBound = 5 * time.Second

// components tracks the agent's running goroutines by name, so that a
// shutdown can say which one is stuck.
type components struct {
	mu      sync.Mutex // guards running
	running map[string]int
	wg      sync.WaitGroup
}

func (c *components) start(name string) {
	c.mu.Lock()
	if c.running == nil {
		c.running = map[string]int{}
	}
	c.running[name]++
	c.mu.Unlock()
	c.wg.Add(1)
}

func (c *components) done(name string) {
	c.mu.Lock()
	if c.running[name]--; c.running[name] == 0 {
		delete(c.running, name)
	}
	c.mu.Unlock()
	c.wg.Done()
}

// wait waits for every component or for ctx, and returns the names of
// those still running.
func (c *components) wait(ctx context.Context) []string {
	all := make(chan struct{})
	go func() { c.wg.Wait(); close(all) }()
	select {
	case <-all:
		return nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.running))
	for n := range c.running {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// lockStateDir takes the state directory for this process: a second agent
// on the same directory would publish the first one's registrations as its
// own. The lock is an flock on <dir>/lock, which holds the owner's pid; the
// kernel releases it when the process ends, however it ends.
func lockStateDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(owner))
			if pid == "" {
				pid = "unknown"
			}
			return nil, fmt.Errorf("state directory %s is in use by pid %s (another l4lb agent): give each agent its own --state-dir", dir, pid)
		}
		return nil, fmt.Errorf("state directory lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}

// DataPlane programs this node's kernel from the desired table: IPVS
// (*ipvs.Reconciler) or nftables (*nftables.Reconciler).
type DataPlane interface {
	TableSink
	Run(ctx context.Context) error
	Connections() map[vip.ServiceKey]map[netip.AddrPort]ipvs.Conns
	Collector() prometheus.Collector
	Close(clean bool) error
}

var (
	_ DataPlane = (*ipvs.Reconciler)(nil)
	_ DataPlane = (*nftables.Reconciler)(nil)
)

// openPlane opens the data plane o asks for, and says which it opened:
// with "auto", IPVS where the kernel has it, else nftables.
func openPlane(o Options, vipCfg vip.Config, log *logrus.Entry, programmed func(*vip.Table)) (DataPlane, string, error) {
	if o.DataPlane == "ipvs" || o.DataPlane == "auto" {
		pc := planeConfig(o, vipCfg, log)
		pc.OnProgrammed = programmed
		p, err := ipvs.New(pc)
		if err == nil {
			return p, "ipvs", nil
		}
		if o.DataPlane == "ipvs" || !errors.Is(err, ipvs.ErrNoIPVS) {
			return nil, "", err
		}
		log.WithField("reason", err.Error()).Info("--dataplane auto: no IPVS in this kernel; using nftables")
	}
	p, err := nftables.New(nftables.Config{
		ResyncPeriod: o.ResyncPeriod, DrainTimeout: o.DrainTimeout, Logger: log, OnProgrammed: programmed, PublicAddrs: o.PublicAddrs,
	})
	if err != nil {
		return nil, "", err
	}
	return p, "nftables", nil
}

// nodeAddr is this node's address as other nodes reach it: --advertise,
// else --bind when it names one address.
func nodeAddr(o Options) (netip.Addr, error) {
	for _, s := range []string{o.Advertise, o.Bind} {
		if a, err := netip.ParseAddr(s); err == nil && !a.IsUnspecified() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, errors.New("--docker-endpoint needs this node's address for containers' published ports: give --advertise (or --bind an address)")
}

// planeConfig is the IPVS data plane's configuration for o.
func planeConfig(o Options, vipCfg vip.Config, log *logrus.Entry) ipvs.Config {
	var local []netip.Addr
	for _, a := range o.DNSListen {
		if ap, err := netip.ParseAddrPort(a); err == nil && dnsDummyRange.Contains(ap.Addr()) {
			local = append(local, ap.Addr())
		}
	}
	return ipvs.Config{
		Interface: o.Interface, LocalAddrs: local, ResyncPeriod: o.ResyncPeriod, DrainTimeout: o.DrainTimeout,
		Masquerade: ipvs.Masquerade{VIPRanges: append([]netip.Prefix{vipCfg.WithDefaults().V4, vipCfg.WithDefaults().V6}, o.IPVIPCIDRs...)},
		Logger:     log,
		// Public services and the record of those l4lb created.
		PublicAddrs: o.PublicAddrs, PublicRecord: filepath.Join(o.StateDir, "public-services.json"),
	}
}

// Cleanup removes what l4lb holds in this node's kernel (IPVS services on
// the dummy interface, its addresses, the masquerade rules; or, with
// nftables, table inet l4lb), cutting the connections through them: what an operator asks for when l4lb leaves the
// node for good. Stopping the agent never does it. The state directory
// (registrations, claims) is kept.
func Cleanup(o Options) error {
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	log := o.Log.WithField("node", o.NodeName)
	if o.DataPlane == "ipvs" || o.DataPlane == "auto" {
		err := ipvs.Cleanup(planeConfig(o, vip.Config{Domain: o.Domain, V4: o.VIPCIDR, V6: o.VIP6CIDR}, log))
		switch {
		case err == nil:
			log.WithField("interface", o.Interface).Info("l4lb's IPVS state removed")
			return nil
		case o.DataPlane == "ipvs" || !errors.Is(err, ipvs.ErrNoIPVS):
			return err
		}
	}
	if o.DataPlane == "nftables" || o.DataPlane == "auto" {
		p, err := nftables.New(nftables.Config{KeepSysctls: true, Logger: log})
		if err != nil {
			return fmt.Errorf("clean up l4lb's nftables state: %w", err)
		}
		if err := p.Close(true); err != nil {
			return fmt.Errorf("clean up l4lb's nftables state: %w", err)
		}
		log.WithField("table", "inet "+nftables.TableName).Info("l4lb's nftables state removed")
	}
	return nil
}

// minRebuildInterval bounds how often the desired table is rebuilt: a
// rebuild copies the table's VIP slice (about 0.2 ms at 10,000 VIPs), so a
// burst of changes is applied in a few rebuilds, not one per change, while
// a change that finds the agent idle is applied at once.
const minRebuildInterval = 50 * time.Millisecond

// dockerFirstListing bounds how long the agent waits, before it starts
// gossip, for the Docker source's first listing, so that its first record
// holds the containers' backends.
const dockerFirstListing = 5 * time.Second

// joinGrace is how long an agent with seeds waits for one to answer before
// it programs the kernel from its own state alone (the first node of a
// cluster whose other nodes are not up yet).
const joinGrace = 10 * time.Second

// stateMerged says the cluster state is merged once a peer's whole state
// was merged and the records it announced are held (gossip's Merged: a
// join, or a peer's join, exchanges it) and every seed given as an address
// is a live member, at once without seeds, and after grace otherwise.
// Until then the kernel is not touched: a restarted node's State() lacks
// other nodes' backends, which its kernel still serves. A peer being a
// member is not enough (memberlist reports the join before it merges the
// state that came with it), nor is one seed when all the nodes restart at
// once: the first two to meet would withdraw the backends of the third
// until it is back (seen in the fault suite). Seeds given by host name are
// not waited for, beyond the merge.
//
// The grace counts from when gossip started (*started, unix ns; 0 before):
// the setup before it (data plane, sysctls, iptables) can take longer than
// the grace on a loaded host, and a grace spent before any seed could be
// tried would program a restarted node's kernel from its own state alone,
// withdrawing every other node's backends from it. A seed that is gone for
// good costs every restart the grace, while the kernel keeps serving.
func stateMerged(c *gossip.Cluster, seeds []string, started *atomic.Int64, grace time.Duration) func() (bool, string) {
	var want []netip.AddrPort
	for _, s := range seeds {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			want = append(want, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
	return func() (bool, string) {
		at := started.Load()
		switch {
		case len(seeds) == 0:
			return true, ""
		case at != 0 && time.Since(time.Unix(0, at)) > grace:
			return true, ""
		case !c.Merged():
			return false, "waiting for a seed to answer to merge the cluster state"
		}
		if missing := seedsMissing(c.Members(), want); len(missing) > 0 {
			return false, "waiting for the seeds " + strings.Join(missing, ", ") + " to be in the cluster (or for the join grace)"
		}
		return true, ""
	}
}

// seedsMissing returns the seeds that are no live member's address.
func seedsMissing(members []gossip.Member, seeds []netip.AddrPort) []string {
	live := make(map[netip.AddrPort]bool, len(members))
	for _, m := range members {
		if m.State == gossip.MemberAlive || m.State == gossip.MemberSuspect {
			live[m.Addr] = true
		}
	}
	var out []string
	for _, s := range seeds {
		if !live[s] {
			out = append(out, s.String())
		}
	}
	return out
}

// seedReached says whether this node has ever been in a cluster with
// another node, when it has seeds: until then its state is its own alone,
// and DNS would answer NXDOMAIN for every other node's VIP.
func seedReached(c *gossip.Cluster, seeds []string) func() (bool, string) {
	var reached atomic.Bool
	return func() (bool, string) {
		if len(seeds) == 0 || reached.Load() {
			return true, ""
		}
		if c.Stats().Members >= 2 {
			reached.Store(true)
			return true, ""
		}
		return false, fmt.Sprintf("no seed of --join (%s) has answered yet: check the addresses, the gossip port and the gossip key", strings.Join(seeds, ", "))
	}
}

// warnUnseeded logs, every period, that no seed was ever reached.
func warnUnseeded(ctx context.Context, log *logrus.Entry, seeded func() (bool, string), period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ok, why := seeded()
			if ok {
				return
			}
			log.WithField("reason", why).Warn("not ready: working alone")
		}
	}
}

// waitFor polls cond until it holds (true) or ctx ends (false).
func waitFor(ctx context.Context, cond func() bool) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}
