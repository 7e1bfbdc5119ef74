package api

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
)

// RenderVIPs writes the VIP table for people, one VIP a block:
//
//	/dcos-101/app2:10000  tcp 11.94.72.3:10000  wlc  programmed
//	  names  app2.dcos-101.marathon.l4lb.thisdcos.directory
//	  public  port 10000 of every public node; here at 192.0.2.10:10000
//	  -> 10.200.0.2:8080  node2  weight 1  healthy  active 0  inactive 2
func RenderVIPs(w io.Writer, v VIPs) error {
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
			fmt.Fprintf(tw, "  -> %s\t%s\tweight %d\t%s\tactive %d\tinactive %d\n", b.Address, b.Node, b.Weight, b.Health, b.ActiveConns, b.InactConns)
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
