package ipvs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/ipvs/internal/netns"
)

// Sysctl is one kernel setting l4lb needs, and why.
type Sysctl struct {
	Key, Value, Why string
}

// Sysctls are the kernel settings a VIP load balancer needs, and only those.
// They are per network namespace.
var Sysctls = []Sysctl{
	{"net.ipv4.vs.conntrack", "1", "keep conntrack entries for IPVS connections, so that the MASQUERADE rule can rewrite the source of VIP traffic leaving the node"},
	{"net.ipv4.vs.expire_nodest_conn", "1", "drop a connection's entry as soon as its real server is deleted, so the client gets a reset and reconnects instead of hanging"},
	{"net.ipv4.vs.expire_quiescent_template", "1", "expire persistence templates that point at a weight-0 (draining) real server, so persistent clients move to live backends"},
	{"net.ipv4.conf.all.arp_ignore", "1", "every node holds every VIP on its dummy interface: answer ARP only for addresses of the interface the request came in on, never for VIPs"},
	{"net.ipv4.conf.all.arp_announce", "2", "never use a VIP as the source of an ARP request"},
}

// PublicSysctls are set besides Sysctls on a public node (Config.PublicAddrs):
// the replies of a public service's backends, once the masquerade is undone,
// are addressed to a client outside the node and leave by the forward path.
// The IPv6 one only when a public address is IPv6.
var PublicSysctls = []Sysctl{
	{"net.ipv4.ip_forward", "1", "public node: replies to outside clients of a public service are forwarded once the masquerade is undone"},
	{"net.ipv6.conf.all.forwarding", "1", "public node with an IPv6 public address: the same for IPv6"},
}

// hostSetup owns what l4lb sets outside IPVS: sysctls and the masquerade
// rules in iptables.
type hostSetup struct {
	namespace string
	iface     string
	masq      Masquerade
	log       *logrus.Entry
	public    []netip.Addr // Config.PublicAddrs: PublicSysctls are set too
	backend   string       // "legacy" or "nft", once detected
	// noV6 is why IPv6 cannot be masqueraded ("" when it can): the
	// backend's ip6tables nat table refused our probe chain. IPv6 VIPs
	// are then left out of the kernel (Reconciler.IPv6Disabled).
	noV6 string
}

// inNamespace runs fn inside the network namespace at path ("" is the
// caller's own).
func inNamespace(path string, fn func() error) error { return netns.Do(path, fn) }

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// setSysctls writes Sysctls in the namespace.
func (h *hostSetup) setSysctls() error {
	return inNamespace(h.namespace, func() error {
		var errs []error
		sysctls := Sysctls
		if len(h.public) > 0 {
			sysctls = append(slices.Clone(sysctls), PublicSysctls[0])
			if slices.ContainsFunc(h.public, netip.Addr.Is6) {
				sysctls = append(sysctls, PublicSysctls[1])
			}
		}
		for _, s := range sysctls {
			if err := os.WriteFile(sysctlPath(s.Key), []byte(s.Value), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("set sysctl %s=%s (%s): %w", s.Key, s.Value, s.Why, err))
				continue
			}
			h.log.WithFields(logrus.Fields{"sysctl": s.Key, "value": s.Value}).Debug("sysctl set")
		}
		return errors.Join(errs...)
	})
}

// ReadSysctl reads a sysctl in the namespace at nsPath ("" for the caller's).
func ReadSysctl(nsPath, key string) (string, error) {
	var v string
	err := inNamespace(nsPath, func() error {
		b, err := os.ReadFile(sysctlPath(key))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// The owned iptables objects: one chain in the nat table, jumped to from
// POSTROUTING by one rule that carries masqComment.
const (
	masqChain   = "L4LB-POSTROUTING"
	masqComment = "l4lb: masquerade VIP connections"
)

// iptablesCmd is the command of a backend and family: "iptables-legacy",
// "ip6tables-nft", ...
func iptablesCmd(backend string, v6 bool) string {
	name := "iptables"
	if v6 {
		name = "ip6tables"
	}
	if backend == "" {
		return name
	}
	return name + "-" + backend
}

// run runs an iptables command in the namespace with a deadline.
func (h *hostSetup) run(stdin string, name string, args ...string) (string, error) {
	var out []byte
	err := inNamespace(h.namespace, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// probeChain is the chain created and deleted to prove that a backend can
// write the nat table.
const probeChain = "L4LB-PROBE"

// proveNAT proves that backend can write the nat table of a family by
// creating and deleting our probe chain, in one iptables-restore
// transaction (one process: they are slow to start on a loaded node, and
// nothing is left behind if it fails halfway): on some kernels nf_tables
// loads and lists an (empty) nat table but cannot create one, and a
// listing alone would pass.
func (h *hostSetup) proveNAT(backend string, v6 bool) error {
	input := "*nat\n:" + probeChain + " - [0:0]\n-X " + probeChain + "\nCOMMIT\n"
	_, err := h.run(input, iptablesCmd(backend, v6)+"-restore", "-w", "--noflush")
	return err
}

// detectBackend picks the iptables backend the host uses: the one that
// already holds rules (as kube-proxy's iptables-wrapper decides); with no
// rules anywhere, nft before legacy. A host whose rules live in one backend
// must get ours in the same one, or packets meet two rule sets in an order
// nobody chose. A backend is chosen only once it has proven it can write
// the IPv4 nat table (proveNAT); if the preferred one cannot, the other is
// tried. Then IPv6 NAT is proven the same way; without it IPv6 is not
// masqueraded and IPv6 VIPs are disabled (noV6), with a warning, while
// IPv4 works.
func (h *hostSetup) detectBackend() (string, error) {
	if h.backend != "" {
		return h.backend, nil
	}
	count := func(backend string) (int, bool) {
		out, err := h.run("", iptablesCmd(backend, false)+"-save")
		if err != nil {
			return 0, false
		}
		n := 0
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "-A ") {
				n++
			}
		}
		return n, true
	}
	var order []string
	var nLegacy, nNft int
	if h.masq.IPTables != "" {
		order = []string{h.masq.IPTables}
	} else {
		var okLegacy, okNft bool
		nLegacy, okLegacy = count("legacy")
		nNft, okNft = count("nft")
		switch {
		case okLegacy && (!okNft || nLegacy > nNft):
			order = []string{"legacy", "nft"}
		default:
			order = []string{"nft", "legacy"}
		}
	}
	var errs []error
	for _, b := range order {
		err := h.proveNAT(b, false)
		if err == nil {
			h.backend = b
			break
		}
		errs = append(errs, fmt.Errorf("iptables-%s: %w", b, err))
		if len(order) > 1 {
			h.log.WithFields(logrus.Fields{"backend": b, "reason": err.Error()}).Warn("iptables backend cannot write the nat table; trying the other")
		}
	}
	if h.backend == "" {
		return "", fmt.Errorf("no working iptables: no backend could create a chain in the nat table: %w", errors.Join(errs...))
	}
	if err := h.proveNAT(h.backend, true); err != nil {
		h.noV6 = fmt.Sprintf("IPv6 VIPs disabled: %s cannot write the IPv6 nat table (no IPv6 NAT in this kernel?): %v", iptablesCmd(h.backend, true), err)
		h.log.WithFields(logrus.Fields{"backend": h.backend, "reason": h.noV6}).
			Warn("IPv6 VIPs disabled: this kernel cannot masquerade IPv6; IPv4 VIPs work")
	}
	h.log.WithFields(logrus.Fields{"backend": h.backend, "legacy_rules": nLegacy, "nft_rules": nNft, "ipv6": h.noV6 == ""}).Info("iptables backend detected")
	return h.backend, nil
}

// masqRules are the rules of the owned chain for one family, as
// iptables-restore input lines.
func masqRules(ranges []netip.Prefix, v6 bool) []string {
	var rules []string
	for _, p := range ranges {
		if p.Addr().Is6() != v6 {
			continue
		}
		rules = append(rules, fmt.Sprintf("-A %s ! -o lo -m ipvs --vaddr %s --vdir ORIGINAL --vmethod MASQ -m comment --comment %q -j MASQUERADE", masqChain, p.Masked(), "l4lb: VIP range "+p.Masked().String()))
	}
	return rules
}

// ensureMasquerade installs the owned rules, idempotently: the chain is
// rewritten atomically by iptables-restore --noflush, and the jump from
// POSTROUTING is added only when missing.
func (h *hostSetup) ensureMasquerade() error {
	if h.masq.Disabled {
		return nil
	}
	backend, err := h.detectBackend()
	if err != nil {
		return err
	}
	for _, v6 := range []bool{false, true} {
		if v6 && h.noV6 != "" {
			continue
		}
		cmd := iptablesCmd(backend, v6)
		input := "*nat\n:" + masqChain + " - [0:0]\n" + strings.Join(append(masqRules(h.masq.VIPRanges, v6), "COMMIT"), "\n") + "\n"
		if _, err := h.run(input, cmd+"-restore", "-w", "--noflush"); err != nil {
			return fmt.Errorf("install masquerade rules: %w", err)
		}
		jump := []string{"POSTROUTING", "-m", "comment", "--comment", masqComment, "-j", masqChain}
		if _, err := h.run("", cmd, append([]string{"-w", "-t", "nat", "-C"}, jump...)...); err != nil {
			if _, err := h.run("", cmd, append([]string{"-w", "-t", "nat", "-I"}, jump...)...); err != nil {
				return fmt.Errorf("install masquerade jump: %w", err)
			}
		}
	}
	return nil
}

// removeMasquerade deletes the owned rules and chain; what is already gone
// is not an error.
func (h *hostSetup) removeMasquerade() error {
	if h.masq.Disabled {
		return nil
	}
	backend, err := h.detectBackend()
	if err != nil {
		return err
	}
	var errs []error
	for _, v6 := range []bool{false, true} {
		if v6 && h.noV6 != "" {
			continue
		}
		cmd := iptablesCmd(backend, v6)
		jump := []string{"POSTROUTING", "-m", "comment", "--comment", masqComment, "-j", masqChain}
		for i := 0; i < 10; i++ {
			if _, err := h.run("", cmd, append([]string{"-w", "-t", "nat", "-D"}, jump...)...); err != nil {
				break
			}
		}
		if _, err := h.run("", cmd, "-w", "-t", "nat", "-S", masqChain); err != nil {
			continue // no chain
		}
		if _, err := h.run("", cmd, "-w", "-t", "nat", "-F", masqChain); err != nil {
			errs = append(errs, err)
		}
		if _, err := h.run("", cmd, "-w", "-t", "nat", "-X", masqChain); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
