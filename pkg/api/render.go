package api

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// RenderVIPs writes the VIP table for people: one line per VIP in fixed
// columns, then every backend that does not take new connections, with
// its state and why, then the names the table could not hold:
//
//	VIP                   PROTO  ADDRESS           SCHEDULER  PUBLIC           BACKENDS  STATE
//	/dcos-101/app2:10000  tcp    11.94.72.3:10000  wlc        192.0.2.1:10000  1/2 up    programmed
//
//	NOT SERVING  VIP                   BACKEND          NODE   STATE     REASON
//	             /dcos-101/app2:10000  10.200.0.4:8080  node3  draining  deregistered
func RenderVIPs(w io.Writer, v VIPs) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(v.VIPs) == 0 {
		fmt.Fprintln(tw, "no VIPs")
	} else {
		fmt.Fprintln(tw, "VIP\tPROTO\tADDRESS\tSCHEDULER\tPUBLIC\tBACKENDS\tSTATE")
	}
	type problem struct{ vip, backend, node, state, reason string }
	var problems []problem
	for _, x := range v.VIPs {
		sched := x.Scheduler
		if x.Persistence > 0 {
			sched += fmt.Sprintf(" sticky %ds", x.Persistence)
		}
		public := "-"
		switch {
		case len(x.PublishedAt) > 0:
			public = strings.Join(x.PublishedAt, ",")
		case x.PublicPort != 0:
			public = "port " + strconv.Itoa(int(x.PublicPort))
		}
		up := 0
		for _, b := range x.Backends {
			state, reason := BackendState(b)
			if state == "up" {
				up++
				continue
			}
			problems = append(problems, problem{x.Label, b.Address, b.Node, state, reason})
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d up\t%s\n", x.Label, x.Protocol, net.JoinHostPort(x.Address, strconv.Itoa(int(x.Port))),
			sched, public, up, len(x.Backends), vipState(x))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The second table aligns on its own.
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(problems) > 0 {
		fmt.Fprintln(tw, "\nNOT SERVING\tVIP\tBACKEND\tNODE\tSTATE\tREASON")
		for _, p := range problems {
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\t%s\n", p.vip, p.backend, p.node, p.state, cmp.Or(p.reason, "-"))
		}
	}
	for _, e := range v.Errors {
		fmt.Fprintf(tw, "error\t%s\n", e)
	}
	return tw.Flush()
}

// BackendState is a backend's state as people read it: up (takes new
// connections), draining or down, with why when not up. It is the
// backend's State when the agent set one, else derived from its health
// and weight.
func BackendState(b Backend) (state, reason string) {
	if b.State != "" {
		return b.State, b.Reason
	}
	switch {
	case b.Health == "unhealthy":
		return "down", "failing its health check"
	case b.Health == "draining" || b.Weight == 0:
		return "draining", "weight 0"
	}
	return "up", ""
}

func vipState(x VIP) string {
	if x.Programmed {
		return "programmed"
	}
	return "not programmed"
}

// SelectVIPs returns the VIPs of v that match, sorted by label (then
// port and protocol): match, when not empty, is a case-insensitive part of
// the label, a DNS name or the address; node, when not empty, keeps the
// VIPs with a backend on that node. Errors are kept.
func SelectVIPs(v VIPs, match, node string) VIPs {
	match = strings.ToLower(match)
	out := VIPs{Errors: v.Errors}
	for _, x := range v.VIPs {
		if match != "" && !vipMatches(x, match) {
			continue
		}
		if node != "" && !slices.ContainsFunc(x.Backends, func(b Backend) bool { return b.Node == node }) {
			continue
		}
		out.VIPs = append(out.VIPs, x)
	}
	slices.SortStableFunc(out.VIPs, func(a, b VIP) int {
		return cmp.Or(cmp.Compare(strings.ToLower(a.Label), strings.ToLower(b.Label)), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
	return out
}

func vipMatches(x VIP, match string) bool {
	if strings.Contains(strings.ToLower(x.Label), match) || strings.Contains(x.Address, match) {
		return true
	}
	for _, n := range x.Names {
		if strings.Contains(strings.ToLower(n), match) {
			return true
		}
	}
	return false
}

// RenderVIPsWide writes the VIP table for people, one VIP a block with
// every backend and its connections (l4lb vips -o wide):
//
//	/dcos-101/app2:10000  tcp 11.94.72.3:10000  wlc  programmed
//	  names  app2.dcos-101.marathon.l4lb.thisdcos.directory
//	  public  port 10000 of every public node; here at 192.0.2.10:10000
//	  -> 10.200.0.2:8080  node2  weight 1  healthy  active 0  inactive 2
func RenderVIPsWide(w io.Writer, v VIPs) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(v.VIPs) == 0 {
		fmt.Fprintln(tw, "no VIPs")
	}
	for _, x := range v.VIPs {
		state := "programmed"
		if !x.Programmed {
			state = "not programmed"
		}
		sched := x.Scheduler
		if x.Persistence > 0 {
			sched += fmt.Sprintf(" persistent %ds", x.Persistence)
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\n", x.Label, x.Protocol, net.JoinHostPort(x.Address, strconv.Itoa(int(x.Port))), sched, state)
		if len(x.Names) > 0 {
			fmt.Fprintf(tw, "  names\t%s\n", strings.Join(trimDots(x.Names), " "))
		}
		if x.PublicPort != 0 {
			at := "port " + strconv.Itoa(int(x.PublicPort)) + " of every public node"
			if len(x.PublishedAt) > 0 {
				at += "; here at " + strings.Join(x.PublishedAt, " ")
			}
			fmt.Fprintf(tw, "  public\t%s\n", at)
		}
		for _, c := range x.Conflicts {
			fmt.Fprintf(tw, "  conflict\t%s\n", c)
		}
		if len(x.Backends) == 0 {
			fmt.Fprintf(tw, "  (no backends)\n")
		}
		for _, b := range x.Backends {
			state, why := BackendState(b)
			if why != "" {
				state += ": " + why
			}
			fmt.Fprintf(tw, "  -> %s\t%s\tweight %d\t%s\tactive %d\tinactive %d\t%s\n", b.Address, b.Node, b.Weight, b.Health, b.ActiveConns, b.InactConns, state)
		}
	}
	for _, e := range v.Errors {
		fmt.Fprintf(tw, "error\t%s\n", e)
	}
	return tw.Flush()
}

// RenderMembers writes the member list for people.
func RenderMembers(w io.Writer, m Members) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tBACKENDS")
	for _, x := range m.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", x.Name, x.Address, x.State, x.Backends)
	}
	return tw.Flush()
}

func trimDots(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.TrimSuffix(n, ".")
	}
	return out
}
