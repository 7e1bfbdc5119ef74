package ipvs

import (
	"errors"
	"fmt"
	"time"

	"github.com/l4lb/l4lb/vip"
)

// Cleanup removes what l4lb holds in a node's kernel: its virtual services
// (those whose address is on the dummy interface) with their real servers,
// cutting their connections instead of draining them; the addresses on the
// dummy interface, the local ones of cfg.LocalAddrs included; and the owned
// masquerade rules. The agent never does this when it stops, so that a
// restart cuts nothing; an operator asks for it (`l4lb agent --cleanup`)
// when l4lb leaves the node for good. The dummy interface itself stays,
// empty. Services that are not l4lb's are not touched.
func Cleanup(cfg Config) error {
	cfg.DrainTimeout = time.Nanosecond // cut at once: nothing is left to drain to
	cfg.LocalAddrs = nil
	r, err := New(cfg)
	if err != nil {
		return err
	}
	r.Update(&vip.Table{})
	var errs []error
	// The first sync reads the kernel and sets withdrawn TCP real servers
	// to weight 0; the next deletes them, their services and addresses.
	for i := 0; i < 3; i++ {
		if err := r.SyncNow(i == 0); err != nil {
			errs = append(errs, err)
		}
	}
	r.mu.Lock()
	left := len(r.owned)
	r.mu.Unlock()
	if len(r.addrs) > 0 || left > 0 {
		errs = append(errs, fmt.Errorf("%d services and %d addresses remain on %s", left, len(r.addrs), cfg.withDefaults().Interface))
	}
	if err := r.Close(true); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up l4lb's kernel state: %w", err)
	}
	return nil
}
