package bed

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// umlModulesRoot is where Debian's user-mode-linux package keeps the guest
// kernel's modules.
const umlModulesRoot = "/usr/lib/uml/modules"

// Modules are the kernel modules l4lb's tests need. On a host kernel
// (L4LB_KERNEL=host) they are expected to be loaded or built in already.
var Modules = []string{
	"dummy", "veth", "bridge",
	"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_lblc",
	"ip_vs_lblcr", "ip_vs_dh", "ip_vs_sh", "ip_vs_sed", "ip_vs_nq", "ip_vs_mh",
	"nf_conntrack", "nf_nat", "x_tables", "ip_tables", "ip6_tables",
	"iptable_nat", "iptable_filter", "iptable_mangle", "ip6table_nat", "ip6table_filter",
	"xt_ipvs", "xt_MASQUERADE", "xt_conntrack", "xt_comment", "xt_mark", "xt_addrtype",
	"ip_set", "ip_set_hash_ip", "ip_set_hash_ipport", "xt_set",
}

// prepareKernel makes the kernel ready for the tests: modules loaded (in the
// UML guest, where no module is loaded on demand), loopback up, and IPVS
// present.
func prepareKernel() error {
	if err := LoadModules(Modules...); err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set loopback up: %w", err)
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		return fmt.Errorf("this kernel has no IPVS (/proc/net/ip_vs: %v)", err)
	}
	return nil
}

// LoadModules loads kernel modules and their dependencies in the UML
// guest, as modprobe would (the guest loads nothing on demand): what
// prepareKernel does at boot, and what a test that needs a module beyond
// Modules (nf_tables, say) calls. On the host kernel (L4LB_KERNEL=host) it
// does nothing: modules are the host's business.
func LoadModules(names ...string) error {
	if os.Getenv(EnvKernel) == "host" {
		return nil
	}
	var uname unix.Utsname
	if err := unix.Uname(&uname); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	loader, err := newModuleLoader(filepath.Join(umlModulesRoot, unix.ByteSliceToString(uname.Release[:])))
	if err != nil {
		return err
	}
	for _, m := range names {
		if err := loader.load(m); err != nil {
			return fmt.Errorf("load module %s: %w", m, err)
		}
	}
	return nil
}

// moduleLoader loads modules and their dependencies from one modules
// directory, as modprobe would, reading its modules.dep.
type moduleLoader struct {
	dir    string
	deps   map[string][]string // module name -> dependency paths, deepest last
	paths  map[string]string   // module name -> path relative to dir
	loaded map[string]bool
}

func newModuleLoader(dir string) (*moduleLoader, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("guest kernel modules: %w (is user-mode-linux installed?)", err)
	}
	defer f.Close()
	l := &moduleLoader{dir: dir, deps: map[string][]string{}, paths: map[string]string{}, loaded: map[string]bool{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		path, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		name := moduleName(path)
		l.paths[name] = path
		l.deps[name] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return l, nil
}

// moduleName turns "kernel/net/netfilter/ipvs/ip_vs_rr.ko" into "ip_vs_rr".
func moduleName(path string) string {
	base := filepath.Base(path)
	base, _, _ = strings.Cut(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

func (l *moduleLoader) load(name string) error {
	name = strings.ReplaceAll(name, "-", "_")
	path, ok := l.paths[name]
	if !ok {
		return fmt.Errorf("not in %s/modules.dep", l.dir)
	}
	deps := l.deps[name]
	// modules.dep lists dependencies so that the last must be loaded first.
	for i := len(deps) - 1; i >= 0; i-- {
		if err := l.insert(deps[i]); err != nil {
			return err
		}
	}
	return l.insert(path)
}

func (l *moduleLoader) insert(path string) error {
	name := moduleName(path)
	if l.loaded[name] {
		return nil
	}
	f, err := os.Open(filepath.Join(l.dir, path))
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("insert %s: %w", path, err)
	}
	l.loaded[name] = true
	return nil
}
