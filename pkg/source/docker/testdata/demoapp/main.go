// Command demoapp is the program inside the containers that the Docker
// source's tests run: a static binary, imported as an image without a
// registry. It serves HTTP, and checks such a server for a HEALTHCHECK.
//
//	demoapp serve [-listen :8080] [-fail-after 2s] [-ignore-term]   /healthz answers 200, then 500 after -fail-after
//	demoapp check http://127.0.0.1:8080/healthz      exit 0 on a 2xx answer, 1 otherwise
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demoapp serve|check ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "check":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: demoapp check URL")
			os.Exit(2)
		}
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			fmt.Fprintln(os.Stderr, resp.Status)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "demoapp: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", ":8080", "address to serve HTTP on")
	failAfter := fs.Duration("fail-after", 0, "answer /healthz with 500 from this long after start (0: never)")
	ignoreTerm := fs.Bool("ignore-term", false, "ignore SIGTERM (a process that outlives docker kill -s TERM)")
	_ = fs.Parse(args)
	stopOn := []os.Signal{syscall.SIGINT, syscall.SIGTERM}
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
		stopOn = stopOn[:1]
	}
	start := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if *failAfter > 0 && time.Since(start) > *failAfter {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h, _ := os.Hostname()
		fmt.Fprintln(w, h)
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), stopOn...)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
