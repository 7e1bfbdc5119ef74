package gossip

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// Shutdown returns while packets keep arriving: the inner transport's
// listener must not stay blocked handing one over (the agent's stop hung
// there, SIGTERM in the seed scenario's step 6).
func TestTransportShutdownWhilePacketsArrive(t *testing.T) {
	for round := range 20 {
		port := freePort(t, "127.0.0.2")
		inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.2"}, BindPort: port})
		if err != nil {
			t.Fatal(err)
		}
		tr := newCountingTransport(inner, &counters{})
		conn, err := net.Dial("udp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
					_, _ = conn.Write([]byte("x"))
				}
			}
		}()
		// Nobody reads tr.PacketCh(): the forwarder blocks like memberlist's
		// reader does once it has stopped.
		time.Sleep(20 * time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- tr.Shutdown() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("round %d: Shutdown still waiting after 3 s", round)
		}
		close(stop)
		conn.Close()
	}
}
