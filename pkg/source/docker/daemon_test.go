package docker

// The test harness: a real Docker engine (dockertest) started by the tests
// themselves, in a network namespace of its own, with the one image a
// static binary (testdata/demoapp) built by the test and imported.

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/l4lb/l4lb/pkg/source/docker/dockertest"
)

const (
	demoImage = dockertest.DemoImage
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
	return dockertest.BuildDemo(dir)
})

// demoDir holds the demo binary once built; TestMain removes it.
var demoDir string

// engine is a dockertest.Engine with the short names these tests use.
type engine struct {
	*dockertest.Engine
	cli  *client.Client
	sock string
	dir  string
}

// box is dockertest.Box with lower-case fields.
type box struct {
	name    string
	labels  map[string]string
	publish []string
	net     string
	cmd     []string
	health  *container.HealthConfig
	restart bool
}

func startEngine(t testing.TB, dir string, flags ...string) *engine {
	t.Helper()
	return wrap(dockertest.Start(t, dir, dockertest.Options{Flags: flags}))
}

func wrap(e *dockertest.Engine) *engine {
	return &engine{Engine: e, cli: e.Cli, sock: e.Sock, dir: e.Dir}
}

func (e *engine) importDemo() {
	e.T.Helper()
	bin, err := demoBinary()
	if err != nil {
		e.T.Fatal(err)
	}
	e.ImportDemo(bin)
}

func (b box) export() dockertest.Box {
	return dockertest.Box{Name: b.name, Labels: b.labels, Publish: b.publish, Net: b.net, Cmd: b.cmd, Health: b.health, Restart: b.restart}
}

func (e *engine) create(b box) string                         { e.T.Helper(); return e.Create(b.export()) }
func (e *engine) start(id string)                             { e.T.Helper(); e.StartContainer(id) }
func (e *engine) run(b box) string                            { e.T.Helper(); return e.Run(b.export()) }
func (e *engine) inspect(id string) container.InspectResponse { e.T.Helper(); return e.Inspect(id) }
func (e *engine) hostPort(id, port string) uint16             { e.T.Helper(); return e.HostPort(id, port) }
func (e *engine) stop()                                       { e.Stop() }
func (e *engine) remove()                                     { e.Remove() }

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
		e.Networks()
		shared.e = e
	}
	e := shared.e
	e.T = t
	t.Cleanup(e.RemoveAll)
	return e
}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Lock()
	if shared.e != nil {
		shared.e.T = quietTB{}
		shared.e.RemoveAll()
		shared.e.Remove()
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

func newProxy(t *testing.T, to string) *dockertest.Proxy { return dockertest.NewProxy(t, to) }
