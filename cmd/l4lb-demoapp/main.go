// Command l4lb-demoapp is the demo app of l4lb's scenario: an HTTP server
// that answers every request with its instance name, so that a client of a
// VIP sees which backend served it.
//
//	l4lb-demoapp --listen 10.200.0.2:8080 --name app2-a
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	fs := flag.NewFlagSet("l4lb-demoapp", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve HTTP on")
	name := fs.String("name", "", "instance name to answer with (default: host name)")
	delay := fs.Duration("delay", 0, "wait this long before answering (to keep connections in flight)")
	udp := fs.String("udp", "", "also answer UDP datagrams on this address with the instance name (off when empty)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: l4lb-demoapp [--listen ADDR] [--name NAME] [--delay D] [--udp ADDR]\n\nServes HTTP (and with --udp, UDP); every answer is the instance name and a newline. /healthz answers 200,\nor 500 while the file /tmp/l4lb-demoapp-<name>.fail exists.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	failFile := "/tmp/l4lb-demoapp-" + strings.ReplaceAll(*name, "/", "_") + ".fail"
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(failFile); err == nil {
			http.Error(w, "failing on purpose: "+failFile+" exists", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if *delay > 0 {
			time.Sleep(*delay)
		}
		fmt.Fprintln(w, *name)
	})
	if *udp != "" {
		pc, err := net.ListenPacket("udp", *udp)
		if err != nil {
			fmt.Fprintf(os.Stderr, "l4lb-demoapp: %v\n", err)
			os.Exit(1)
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte(*name+"\n"), from)
			}
		}()
	}
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(os.Stderr, "l4lb-demoapp %s serving on %s\n", *name, *listen)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "l4lb-demoapp: %v\n", err)
		os.Exit(1)
	}
}
