package genl

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests run on the host kernel: they need generic netlink, not IPVS.

func TestOpenReportsMissingIPVS(t *testing.T) {
	_, statErr := os.Stat("/proc/net/ip_vs")
	c, err := Open("")
	if statErr == nil {
		// This kernel has IPVS: Open must work.
		if err != nil {
			t.Fatalf("kernel has IPVS but Open failed: %v", err)
		}
		c.Close()
		return
	}
	if !errors.Is(err, ErrNoIPVS) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Open on a kernel without IPVS: %v, want ErrNoIPVS wrapping ENOENT", err)
	}
}

func TestOpenInMissingNamespace(t *testing.T) {
	_, err := Open("/run/netns/l4lb-no-such-namespace")
	if !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Open in a missing namespace: %v, want ENOENT", err)
	}
}

func hostClient(t *testing.T, timeout time.Duration) *Client {
	t.Helper()
	c := &Client{fd: -1, netnsFd: -1, timeout: timeout, batchSize: DefaultBatchSize, recvBuf: make([]byte, recvBufSize)}
	if err := c.openSocket(); err != nil {
		t.Fatalf("generic netlink socket: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestResolveFamily(t *testing.T) {
	c := hostClient(t, time.Second)
	id, err := c.resolveFamily("nlctrl")
	if err != nil || id != unix.GENL_ID_CTRL {
		t.Fatalf("resolve nlctrl: id %d, %v; want %d", id, err, unix.GENL_ID_CTRL)
	}
	if _, err := c.resolveFamily("L4LB_NO_SUCH"); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("resolve a missing family: %v, want ENOENT", err)
	}
}

// A request the kernel never answers (NLMSG_NOOP without NLM_F_ACK) must
// time out within the deadline, and leave a fresh, working socket.
func TestTimeoutReopensSocket(t *testing.T) {
	const timeout = 100 * time.Millisecond
	c := hostClient(t, timeout)
	oldFd, oldPort := c.fd, c.portID
	c.seq++
	noop := kernelMsg(unix.NLMSG_NOOP, unix.NLM_F_REQUEST, c.seq, 0, nil)
	a := newBatchAnswers(c.portID, c.seq, 1)
	start := time.Now()
	err := c.exchange(noop, a.consume, a.finished)
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("unanswered request: %v, want ErrTimeout", err)
	}
	if took < timeout || took > 20*timeout {
		t.Errorf("timed out after %s, want about %s", took, timeout)
	}
	if c.Counters().Reopens != 1 || c.fd < 0 {
		t.Fatalf("socket not reopened: fd %d (was %d), port %d (was %d), %+v", c.fd, oldFd, c.portID, oldPort, c.Counters())
	}
	if id, err := c.resolveFamily("nlctrl"); err != nil || id != unix.GENL_ID_CTRL {
		t.Fatalf("reopened socket does not work: %d, %v", id, err)
	}
}

func TestClosedClient(t *testing.T) {
	c := hostClient(t, time.Second)
	c.family = 0x22
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	errs := c.Do([]Op{{Cmd: DelService, Service: Service{Family: unix.AF_INET, FWMark: 1}}})
	if !errors.Is(errs[0], ErrClosed) {
		t.Errorf("Do after Close: %v", errs[0])
	}
	if _, err := c.Services(); !errors.Is(err, ErrClosed) {
		t.Errorf("Services after Close: %v", err)
	}
	if err := c.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close: %v", err)
	}
}
