// Command dnsbench serves, or writes out, the zone of N named VIPs that the
// dns package's throughput comparison uses (see bench/dns/run.sh).
//
//	dnsbench -vips 10000 -gen DIR        # DIR/zone (RFC 1035 zone file) and DIR/queries (dnsperf input)
//	dnsbench -vips 10000 -serve IP:PORT  # serve the zone until SIGINT/SIGTERM
//
// Both build the same vip.Table, and the zone file is written from the
// records the dns server itself answers, so both servers hold the same data.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	l4dns "github.com/l4lb/l4lb/dns"
	"github.com/l4lb/l4lb/vip"
)

func main() {
	vips := flag.Int("vips", 10000, "named VIPs in the zone")
	gen := flag.String("gen", "", "write zone and queries into this directory")
	serve := flag.String("serve", "", "serve the zone on this ip:port")
	flag.Parse()
	if err := run(*vips, *gen, *serve); err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

func run(n int, gen, serve string) error {
	if (gen == "") == (serve == "") {
		return fmt.Errorf("give exactly one of -gen and -serve")
	}
	listen := serve
	if listen == "" {
		listen = "127.0.0.1:0" // not started; only names the NS glue
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	srv, err := l4dns.NewServer(l4dns.Config{
		Listen:  []string{listen},
		Aliases: []string{},
		Forward: false,
		Logger:  logrus.NewEntry(log),
	})
	if err != nil {
		return err
	}
	srv.Update(benchTable(n))
	if gen != "" {
		return write(gen, n, srv)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	st := srv.Stats()
	fmt.Fprintf(os.Stderr, "dnsbench: replies %v, prepared %d\n", st.Replies, st.Prepared)
	return nil
}

// benchTable is n named VIPs /bench/appN on TCP port 80 with one backend,
// each with its own address in 11.0.0.0/8.
func benchTable(n int) *vip.Table {
	t := &vip.Table{}
	for i := range n {
		a := netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
		app := fmt.Sprintf("app%d", i)
		t.VIPs = append(t.VIPs, vip.VIP{
			ServiceKey: vip.ServiceKey{Addr: a, Port: 80, Protocol: vip.TCP},
			Label:      "/bench/" + app + ":80",
			Name:       "/bench/" + app,
			Framework:  vip.DefaultFramework,
			Names: []string{
				app + ".bench.marathon." + vip.DefaultDomain + ".",
				app + "bench.marathon." + vip.DefaultDomain + ".",
			},
			Scheduler: vip.DefaultScheduler,
			Backends: []vip.Backend{{
				Addr: netip.MustParseAddrPort("10.0.0.1:8080"), Weight: 1, Node: "bench", Health: vip.Healthy,
			}},
		})
	}
	return t
}

func write(dir string, n int, srv *l4dns.Server) error {
	if err := writeFile(filepath.Join(dir, "zone"), func(w io.Writer) error {
		if _, err := fmt.Fprintf(w, "$ORIGIN %s.\n", vip.DefaultDomain); err != nil {
			return err
		}
		for _, rr := range srv.Records() {
			if _, err := fmt.Fprintln(w, rr.String()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "queries"), func(w io.Writer) error {
		for i := range n {
			if _, err := fmt.Fprintf(w, "app%d.bench.marathon.%s A\n", i, vip.DefaultDomain); err != nil {
				return err
			}
		}
		return nil
	})
}

func writeFile(path string, fill func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	w := bufio.NewWriter(f)
	if err := fill(w); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
