package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/stats"
)

// serveStats serves the stats page on o.StatsListen until ctx is done, and
// samples its history meanwhile (every 2 s it reads the kernel's counts of
// every VIP through figures, as /metrics does; a request builds the view,
// as GET /v1/vips does). With no address it returns at once.
func serveStats(ctx context.Context, o Options, vips func() api.VIPs, figures func(func(*vipFigures)), log *logrus.Entry) error {
	if o.StatsListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", o.StatsListen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.StatsListen, err)
	}
	samples := func(yield func(string, int, float64)) {
		figures(func(f *vipFigures) { yield(f.label, f.active, float64(f.traffic.CPS)) })
	}
	page := stats.New(stats.Config{VIPs: vips, Samples: samples, Node: o.NodeName, Plane: o.DataPlane, Log: log})
	srv := &http.Server{Handler: page.Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		page.Run(ctx)
		_ = srv.Close()
	}()
	log.WithField("listen", ln.Addr().String()).Info("stats page serving")
	err = srv.Serve(ln)
	<-done
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
