package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/source"
)

// apiFlag defines --api: where the agent's API is, by default $L4LB_API,
// else api.DefaultAddr.
func apiFlag(fs *flag.FlagSet) *string {
	p := new(string)
	*p = api.DefaultAddr
	if env := os.Getenv("L4LB_API"); env != "" {
		if err := (*apiAddr)(p).Set(env); err != nil {
			fmt.Fprintf(fs.Output(), "l4lb: ignoring L4LB_API: %v\n", err)
		}
	}
	fs.Var((*apiAddr)(p), "api", "address of the agent's API: host:port, a host (port "+defaultAPIPort()+") or a URL like http://"+api.DefaultAddr+"; the default is $L4LB_API when set")
	return p
}

// apiAddr is --api: it takes host:port, a bare host or an http:// URL,
// and holds host:port.
type apiAddr string

func (a *apiAddr) String() string { return string(*a) }

func (a *apiAddr) Set(s string) error {
	v := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "http://"), "/")
	if v == "" || strings.Contains(v, "://") || strings.Contains(v, "/") {
		return fmt.Errorf("want host:port, a host or http://host:port, not %q", s)
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		v = net.JoinHostPort(strings.Trim(v, "[]"), defaultAPIPort())
	}
	if host, _, err := net.SplitHostPort(v); err != nil || host == "" {
		return fmt.Errorf("want host:port, a host or http://host:port, not %q", s)
	}
	*a = apiAddr(v)
	return nil
}

func defaultAPIPort() string {
	_, port, _ := net.SplitHostPort(api.DefaultAddr)
	return port
}

// uint32Value is a flag that holds a whole number from 0 to 2^32-1 and
// refuses anything else, rather than wrapping it around as a cast would.
type uint32Value uint32

func (v *uint32Value) String() string { return strconv.FormatUint(uint64(*v), 10) }

func (v *uint32Value) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("want a whole number from 0 to %d", uint32(math.MaxUint32))
	}
	*v = uint32Value(n)
	return nil
}

func uint32Flag(fs *flag.FlagSet, name string, value uint32, usage string) *uint32Value {
	v := uint32Value(value)
	fs.Var(&v, name, usage)
	return &v
}

func clientContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 15*time.Second)
}

func runRegister(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("register", "VIP BACKEND [flags]", "publish a backend that runs on this node, e.g. l4lb register /dcos-101/app2:10000 10.0.0.12:8080", stderr)
	framework := fs.String("framework", "marathon", "framework that started the app (part of the VIP's DNS name)")
	protocol := fs.String("protocol", "", "tcp or udp (default tcp, or the VIP's tcp:// or udp:// scheme)")
	weight := uint32Flag(fs, "weight", 1, "weight of this backend, 0 to 65535 (0: takes no new connections)")
	check := fs.String("check", "", "health check: tcp (connect), or http:///PATH (GET PATH on the backend, 2xx passes); none by default")
	scheduler := fs.String("scheduler", "", "IPVS scheduler the VIP should use: wlc, rr, sh, mh, ... (default wlc)")
	wait := fs.Bool("wait", false, "return when every live node's kernel has the backend programmed (healthy)")
	timeout := new(time.Duration)
	durationVar(fs, timeout, "timeout", time.Minute, "with --wait: give up after this long, with a non-zero exit")
	persistence := uint32Flag(fs, "persistence", 0, "seconds of client affinity for the VIP (0: none)")
	public := fs.Bool("public", false, "public nodes (agents with --public-address) serve the VIP on their own addresses too")
	publicPort := fs.Int("public-port", 0, "port of the VIP on public nodes, 1 to 65535, with --public (default: the VIP's port)")
	addr := apiFlag(fs)
	pos, err := parse(fs, args, []string{"VIP", "BACKEND"})
	if err != nil {
		return err
	}
	w := uint32(*weight)
	e := source.Entry{VIP: pos[0], Backend: pos[1], Framework: *framework, Protocol: *protocol, Weight: &w, Check: *check, Scheduler: *scheduler, Persistence: uint32(*persistence), Public: *public, PublicPort: *publicPort}
	if _, err := e.Parse(); err != nil {
		return err
	}
	ctx, cancel := clientContext()
	defer cancel()
	res, err := api.NewClient(*addr).Register(ctx, e)
	if err != nil {
		return err
	}
	verb := "updated"
	if res.Created {
		verb = "registered"
	}
	fmt.Fprintf(stdout, "%s %s\n", verb, res.Key)
	if *wait {
		return waitRollout(*addr, e, api.WaitRegistered, *timeout, stdout)
	}
	return nil
}

func runDeregister(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deregister", "VIP BACKEND [flags]", "withdraw a backend of this node; it drains (weight 0) and then leaves", stderr)
	framework := fs.String("framework", "marathon", "framework the backend was registered with")
	protocol := fs.String("protocol", "", "tcp or udp, as registered")
	wait := fs.Bool("wait", false, "return when no live node sends new connections to the backend and none holds one to it")
	timeout := new(time.Duration)
	durationVar(fs, timeout, "timeout", 5*time.Minute, "with --wait: give up after this long, with a non-zero exit saying how many connections remain")
	addr := apiFlag(fs)
	pos, err := parse(fs, args, []string{"VIP", "BACKEND"})
	if err != nil {
		return err
	}
	e := source.Entry{VIP: pos[0], Backend: pos[1], Framework: *framework, Protocol: *protocol}
	if _, err := e.Parse(); err != nil {
		return err
	}
	ctx, cancel := clientContext()
	defer cancel()
	res, err := api.NewClient(*addr).Deregister(ctx, e)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deregistered %s\n", res.Key)
	if *wait {
		return waitRollout(*addr, e, api.WaitDrained, *timeout, stdout)
	}
	return nil
}

func runLeave(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("leave", "[flags]", "make this node's agent leave the cluster for good and stop: every node drops its backends at once (stopping the agent alone is a restart, which withdraws nothing on purpose). Then `l4lb agent --cleanup` removes its kernel state", stderr)
	addr := apiFlag(fs)
	if _, err := parse(fs, args, nil); err != nil {
		return err
	}
	ctx, cancel := clientContext()
	defer cancel()
	if err := api.NewClient(*addr).Leave(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "the agent is leaving the cluster and will stop")
	return nil
}

func runVIPs(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("vips", "[FILTER] [--node NODE] [-o text|wide|json]", "show the VIPs sorted by name, one line each, then the backends that take no new connections and why; FILTER keeps those whose name, DNS name or address contains it", stderr)
	out := fs.String("o", "text", "output format: text (one line per VIP), wide (every backend with its connections) or json")
	node := fs.String("node", "", "only the VIPs with a backend on this node")
	addr := apiFlag(fs)
	pos, err := parse(fs, args, []string{"[FILTER]"})
	if err != nil {
		return err
	}
	render := map[string]func(io.Writer, api.VIPs) error{"text": api.RenderVIPs, "wide": api.RenderVIPsWide, "json": writeJSON}[*out]
	if render == nil {
		return fmt.Errorf("-o %q: want text, wide or json", *out)
	}
	ctx, cancel := clientContext()
	defer cancel()
	v, err := api.NewClient(*addr).VIPs(ctx)
	if err != nil {
		return err
	}
	var match string
	if len(pos) > 0 {
		match = pos[0]
	}
	return render(stdout, api.SelectVIPs(v, match, *node))
}

func writeJSON(w io.Writer, v api.VIPs) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runMembers(args []string, stdout, stderr io.Writer) error {
	return runView("members", "show the cluster's nodes with their state (alive, suspect, dead, left)", args, stdout, stderr,
		func(ctx context.Context, c *api.Client) (any, error) { return c.Members(ctx) },
		func(w io.Writer, v any) error { return api.RenderMembers(w, v.(api.Members)) })
}

// runView is a read-only command: fetch a view from the agent and print it
// as text or JSON.
func runView(name, summary string, args []string, stdout, stderr io.Writer,
	fetch func(context.Context, *api.Client) (any, error), render func(io.Writer, any) error) error {
	fs := newFlagSet(name, "[-o json]", summary, stderr)
	out := fs.String("o", "text", "output format: text or json")
	addr := apiFlag(fs)
	if _, err := parse(fs, args, nil); err != nil {
		return err
	}
	if *out != "text" && *out != "json" {
		return fmt.Errorf("-o %q: want text or json", *out)
	}
	ctx, cancel := clientContext()
	defer cancel()
	v, err := fetch(ctx, api.NewClient(*addr))
	if err != nil {
		return err
	}
	if *out == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return render(stdout, v)
}

func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keygen", "", "print a new random 32-byte gossip key, base64-encoded, for --gossip-key-file", stderr)
	if _, err := parse(fs, args, nil); err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("read random bytes: %w", err)
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
	return nil
}
