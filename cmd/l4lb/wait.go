package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/l4lb/l4lb/pkg/api"
	"github.com/l4lb/l4lb/pkg/source"
)

// waitRollout follows a registration or deregistration across the cluster
// until it is done (nil) or timeout passes (an error saying what remains).
func waitRollout(addr string, e source.Entry, want string, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	p, err := api.NewClient(addr).Wait(ctx, e, want, 200*time.Millisecond, func(p api.Progress) {
		if !p.Done && p.Reason != "" {
			fmt.Fprintf(stdout, "waiting: %s\n", p.Reason)
		}
	})
	if err != nil {
		return err
	}
	if want == api.WaitDrained {
		fmt.Fprintf(stdout, "drained on %d live nodes (%s): no new connections, none left\n", p.Live, strings.Join(p.Applied, ", "))
	} else {
		fmt.Fprintf(stdout, "programmed on %d of %d live nodes (%s)\n", len(p.Applied), p.Live, strings.Join(p.Applied, ", "))
	}
	return nil
}
