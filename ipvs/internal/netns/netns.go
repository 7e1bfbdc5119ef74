// Package netns runs code inside a network namespace, for the data planes
// (IPVS and nftables) that program a namespace other than their own.
package netns

import (
	"fmt"
	"runtime"

	vnetns "github.com/vishvananda/netns"
)

// Do runs fn on a thread inside the network namespace at path (the
// caller's own when path is ""). Files opened under /proc/sys/net, sockets
// created and processes started in fn belong to that namespace.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := vnetns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	errc := make(chan error, 1)
	go func() {
		defer target.Close()
		// The thread never leaves the namespace: it stays locked, so the
		// runtime discards it when the goroutine ends.
		runtime.LockOSThread()
		if err := vnetns.Set(target); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
