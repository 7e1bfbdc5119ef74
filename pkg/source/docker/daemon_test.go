package docker

// The test harness: a real Docker engine (Debian's docker.io) started by
// the tests themselves, each in a network namespace of its own, with its
// socket, data and state in a temporary directory, no iptables rules, and
// no registry: the one image is a static binary (testdata/demoapp) built by
// the test and imported from a tarball.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

const (
	demoImage = "l4lb-demo:test"
	// The ranges the tests' engines use, each inside its own network
	// namespace: the default bridge and two user bridges.
	defaultBridge = "10.213.0.1/24"
	userSubnet    = "10.214.0.0/16"
	lanSubnet     = "10.215.0.0/24"
	// nodeAddr is the address the sources under test say the node has;
	// nothing is ever sent to it.
	nodeAddr = "192.0.2.10"
)

// demoBinary is the static demo app, built once.
var demoBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "l4lb-demoapp")
	if err != nil {
		return "", err
	}
	demoDir = dir
	out := filepath.Join(dir, "demoapp")
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gocmd); err != nil {
		gocmd = "go"
	}
	cmd := exec.Command(gocmd, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./testdata/demoapp")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the demo app: %v\n%s", err, b)
	}
	return out, nil
})

// demoDir holds the demo binary once built; TestMain removes it.
var demoDir string

// engine is one dockerd the test started.
type engine struct {
	t    testing.TB
	dir  string // holds everything of the engine
	sock string
	cli  *client.Client
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *bytes.Buffer
	mu   sync.Mutex // guards log
}

// startEngine starts a Docker engine in dir (a fresh temporary directory
// when dir is ""), or fails the test saying why it could not. The engine
// runs in a network namespace of its own, kept in dir/netns so that a
// restarted engine finds its bridges and its live containers again.
func startEngine(t testing.TB, dir string, flags ...string) *engine {
	t.Helper()
	for _, tool := range []string{"dockerd", "containerd", "runc", "unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("cannot start a Docker engine: %s not found (install Debian's docker.io, util-linux and iproute2: make deps): %v", tool, err)
		}
	}
	if dir == "" {
		var err error
		// A short path: unix socket paths are limited to 108 bytes.
		if dir, err = os.MkdirTemp("", "l4lbdk"); err != nil {
			t.Fatal(err)
		}
	}
	e := &engine{t: t, dir: dir, sock: filepath.Join(dir, "docker.sock"), log: &bytes.Buffer{}, done: make(chan struct{})}
	netns := filepath.Join(dir, "netns")
	if _, err := os.Stat(netns); err != nil {
		// Its bridges and userland proxies touch nothing of the host's.
		if err := os.WriteFile(netns, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("unshare", "--net="+netns, "true").CombinedOutput(); err != nil {
			t.Fatalf("cannot start a Docker engine: make its network namespace: %v: %s", err, out)
		}
		if out, err := exec.Command("nsenter", "--net="+netns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("cannot start a Docker engine: loopback in its network namespace: %v: %s", err, out)
		}
	}
	args := []string{"--net=" + netns, "--", "dockerd",
		"--host", "unix://" + e.sock,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--bip", defaultBridge,
		"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
		"--log-level", "warn"}
	args = append(args, flags...)
	e.cmd = exec.Command("nsenter", args...)
	e.cmd.Stdout = (*lockedWriter)(e)
	e.cmd.Stderr = (*lockedWriter)(e)
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("cannot start a Docker engine: %v", err)
	}
	go func() { _ = e.cmd.Wait(); close(e.done) }()
	cli, err := client.New(client.WithHost("unix://" + e.sock))
	if err != nil {
		e.kill()
		t.Fatalf("docker client: %v", err)
	}
	e.cli = cli
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-e.done:
			e.cleanupMounts()
			t.Fatalf("cannot start a Docker engine: dockerd exited (%v); its output:\n%s", e.cmd.ProcessState, e.output())
		default:
		}
		if time.Now().After(deadline) {
			e.kill()
			t.Fatalf("cannot start a Docker engine: no answer on %s within 90 s (%v); its output:\n%s", e.sock, err, e.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return e
}

type lockedWriter engine

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.log.Len() < 1<<20 {
		w.log.Write(p)
	}
	return len(p), nil
}

func (e *engine) output() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.log.String()
	if len(s) > 8000 {
		s = "...\n" + s[len(s)-8000:]
	}
	return s
}

// stop stops the engine the way an operator does (SIGTERM: it stops its
// containers, unless it runs with --live-restore), and waits for it.
func (e *engine) stop() {
	e.t.Helper()
	if e.cli != nil {
		_ = e.cli.Close()
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(40 * time.Second):
		e.t.Errorf("dockerd did not stop within 40 s of SIGTERM; killing it. Its output:\n%s", e.output())
		e.kill()
	}
	// Mounts stay: containers kept alive (--live-restore) use them, and a
	// restarted engine finds them; remove unmounts everything.
}

func (e *engine) kill() {
	_ = e.cmd.Process.Kill()
	<-e.done
	e.cleanupMounts()
}

// cleanupMounts unmounts whatever the engine left mounted in its
// directory (an engine killed hard leaves its overlays and namespaces).
func (e *engine) cleanupMounts() {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], e.dir+"/") {
			points = append(points, fields[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// remove stops the engine if it runs, ends what it left running (the
// containers of a --live-restore engine), and removes its directory.
func (e *engine) remove() {
	select {
	case <-e.done:
	default:
		e.removeAll()
		e.stop()
	}
	e.cleanupMounts()
	if err := os.RemoveAll(e.dir); err != nil {
		e.t.Logf("remove %s: %v", e.dir, err)
	}
}

// importDemo imports the demo app as demoImage.
func (e *engine) importDemo() {
	e.t.Helper()
	bin, err := demoBinary()
	if err != nil {
		e.t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		e.t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "demoapp", Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		e.t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := e.cli.ImageImport(ctx, client.ImageImportSource{Source: &buf, SourceName: "-"}, demoImage,
		client.ImageImportOptions{Changes: []string{`ENTRYPOINT ["/demoapp"]`, `CMD ["serve"]`}})
	if err != nil {
		e.t.Fatalf("import the demo image: %v", err)
	}
	out, _ := io.ReadAll(r)
	r.Close()
	if bytes.Contains(out, []byte(`"error"`)) {
		e.t.Fatalf("import the demo image: %s", out)
	}
}

// networks creates the user bridges "app" and "lan" ("lan" stands for a
// network other nodes reach: this machine's kernel has no macvlan or
// ipvlan, so the tests name it in Config.Networks).
func (e *engine) networks() {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.cli.NetworkCreate(ctx, "app", client.NetworkCreateOptions{Driver: "bridge",
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: netip.MustParsePrefix(userSubnet)}}}}); err != nil {
		e.t.Fatalf("create network app: %v", err)
	}
	if _, err := e.cli.NetworkCreate(ctx, "lan", client.NetworkCreateOptions{Driver: "bridge",
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: netip.MustParsePrefix(lanSubnet)}}}}); err != nil {
		e.t.Fatalf("create network lan: %v", err)
	}
}

// box describes a container to run.
type box struct {
	name    string
	labels  map[string]string
	publish []string // container ports to publish on a host port: "8080/tcp"; "8080/tcp=31000" for a fixed one
	net     string   // network mode: "" (default bridge), "host", "app", "lan", "none"
	cmd     []string // after the entrypoint; default "serve"
	health  *container.HealthConfig
	restart bool // --restart always
}

// create creates b and returns its ID.
func (e *engine) create(b box) string {
	e.t.Helper()
	cfg := &container.Config{Image: demoImage, Labels: b.labels, Cmd: b.cmd, Healthcheck: b.health, ExposedPorts: network.PortSet{}}
	host := &container.HostConfig{NetworkMode: container.NetworkMode(b.net), PortBindings: network.PortMap{}}
	for _, p := range b.publish {
		spec, hostPort, _ := strings.Cut(p, "=")
		port := network.MustParsePort(spec)
		cfg.ExposedPorts[port] = struct{}{}
		host.PortBindings[port] = []network.PortBinding{{HostPort: hostPort}}
	}
	if b.restart {
		host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyAlways}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := e.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: b.name, Config: cfg, HostConfig: host})
	if err != nil {
		e.t.Fatalf("create container %s: %v", b.name, err)
	}
	return r.ID
}

func (e *engine) start(id string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := e.cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		e.t.Fatalf("start container %s: %v", id, err)
	}
}

// run creates and starts b.
func (e *engine) run(b box) string {
	e.t.Helper()
	id := e.create(b)
	e.start(id)
	return id
}

func (e *engine) inspect(id string) container.InspectResponse {
	e.t.Helper()
	r, err := e.cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		e.t.Fatalf("inspect %s: %v", id, err)
	}
	return r.Container
}

// hostPort returns the host port Docker gave a published container port.
func (e *engine) hostPort(id, port string) uint16 {
	e.t.Helper()
	c := e.inspect(id)
	for _, b := range c.NetworkSettings.Ports[network.MustParsePort(port)] {
		var p uint16
		if _, err := fmt.Sscan(b.HostPort, &p); err == nil && p != 0 {
			return p
		}
	}
	e.t.Fatalf("container %s: port %s is not published: %v", id, port, c.NetworkSettings.Ports)
	return 0
}

// removeAll removes every container of the engine.
func (e *engine) removeAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		e.t.Logf("list containers: %v", err)
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, c := range r.Items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := e.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
				e.t.Logf("remove container %s: %v", c.ID, err)
			}
		}()
	}
	wg.Wait()
}

// sharedEngine is the engine most tests share, started by the first one
// that needs it and stopped by TestMain. Tests using it run one at a
// time and remove their containers.
var shared struct {
	sync.Mutex
	e *engine
}

func sharedEngine(t *testing.T) *engine {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.e == nil {
		e := startEngine(t, "")
		e.importDemo()
		e.networks()
		shared.e = e
	}
	e := shared.e
	e.t = t
	t.Cleanup(e.removeAll)
	return e
}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Lock()
	if shared.e != nil {
		shared.e.t = quietTB{}
		shared.e.removeAll()
		shared.e.remove()
	}
	shared.Unlock()
	if demoDir != "" {
		_ = os.RemoveAll(demoDir)
	}
	os.Exit(code)
}

// quietTB is a testing.TB for after the tests: it prints.
type quietTB struct{ testing.TB }

func (quietTB) Helper()                           {}
func (quietTB) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (quietTB) Errorf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (quietTB) Fatalf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (quietTB) Fatal(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }

// proxy is a unix socket in front of an engine's that the test can cut,
// to make the engine unreachable without stopping it.
type proxy struct {
	path string
	ln   net.Listener
	to   string
	mu   sync.Mutex
	up   bool
	open map[net.Conn]bool
}

func newProxy(t *testing.T, to string) *proxy {
	p := &proxy{path: filepath.Join(t.TempDir(), "p.sock"), to: to, open: map[net.Conn]bool{}, up: true}
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if !p.up {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("unix", p.to)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.open[c], p.open[up] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

// cut closes every connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = false
	for c := range p.open {
		c.Close()
	}
	clear(p.open)
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.up = true
	p.mu.Unlock()
}
