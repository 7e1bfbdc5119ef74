package nftables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/ipvs/internal/netns"
)

// nlConn is one NETLINK_NETFILTER socket in the programmed namespace. It
// sends nf_tables transactions as one batch in one sendmsg (as `nft -f`
// does) and reads dumps. Only the sync goroutine writes; dumps may come
// from any goroutine, so every exchange holds mu.
type nlConn struct {
	mu      sync.Mutex // guards fd, seq, sndbuf
	fd      int
	seq     uint32
	sndbuf  int
	timeout time.Duration
	nsPath  string
}

const nlmsgHdrLen = 16

// openNL opens the socket inside the namespace at nsPath ("" for the
// caller's).
func openNL(nsPath string, timeout time.Duration) (*nlConn, error) {
	c := &nlConn{fd: -1, timeout: timeout, nsPath: nsPath}
	if err := c.open(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *nlConn) open() error {
	var fd int
	err := inNamespace(c.nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return fmt.Errorf("open nf_tables netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("bind nf_tables netlink socket: %w", err)
	}
	// Replies are errors and one acknowledgement per transaction, and dumps
	// that are read as they come: 4 MiB is plenty.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	// Errors carry the kernel's text and not the whole failed request.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	tv := unix.NsecToTimeval(c.timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return fmt.Errorf("set netlink receive timeout: %w", err)
	}
	c.fd, c.sndbuf = fd, 0
	return nil
}

// reset closes the socket after a failed exchange, so that a late answer is
// never read as the answer to a later request; the next call opens a new one.
func (c *nlConn) reset() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

func (c *nlConn) ensure() error {
	if c.fd >= 0 {
		return nil
	}
	return c.open()
}

func (c *nlConn) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reset()
	return nil
}

// nlMsg is one nf_tables request: its type (NFT_MSG_*), flags beyond
// NLM_F_REQUEST, and attributes (after the nfgenmsg header).
type nlMsg struct {
	typ   uint16
	flags uint16
	data  []byte
}

func putHeader(b []byte, length uint32, typ, flags uint16, seq uint32) {
	binary.NativeEndian.PutUint32(b[0:4], length)
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	binary.NativeEndian.PutUint32(b[12:16], 0)
}

func align4(n int) int { return (n + 3) &^ 3 }

// appendMsg appends one netlink message with an nfgenmsg header for family.
func appendMsg(buf []byte, typ, flags uint16, seq uint32, family uint8, resID uint16, data []byte) []byte {
	n := nlmsgHdrLen + 4 + len(data)
	start := len(buf)
	buf = append(buf, make([]byte, align4(n))...)
	putHeader(buf[start:], uint32(n), typ, flags, seq)
	buf[start+16] = family
	buf[start+17] = 0 // NFNETLINK_V0
	binary.BigEndian.PutUint16(buf[start+18:], resID)
	copy(buf[start+20:], data)
	return buf
}

// TxError is the kernel's answer to a failed transaction: nothing of it was
// applied. Index is the failed message's position in the transaction (-1
// when the kernel did not say which).
type TxError struct {
	Index int
	Errno syscall.Errno
	Msg   string // extended ack text, if any
}

func (e *TxError) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("%v (%s)", e.Errno, e.Msg)
	}
	return e.Errno.Error()
}

func (e *TxError) Unwrap() error { return e.Errno }

// transact sends msgs as one nf_tables transaction (batch begin, msgs,
// batch end) and waits for its outcome. The last message asks for an
// acknowledgement; the kernel answers the others only when they fail.
func (c *nlConn) transact(msgs []nlMsg) error {
	if len(msgs) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ensure(); err != nil {
		return err
	}
	size := 2 * (nlmsgHdrLen + 4)
	for _, m := range msgs {
		size += align4(nlmsgHdrLen + 4 + len(m.data))
	}
	buf := make([]byte, 0, size)
	base := c.seq + 1
	c.seq += uint32(len(msgs)) + 2
	buf = appendMsg(buf, unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, base, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)
	for i, m := range msgs {
		flags := unix.NLM_F_REQUEST | m.flags
		if i == len(msgs)-1 {
			flags |= unix.NLM_F_ACK
		}
		buf = appendMsg(buf, unix.NFNL_SUBSYS_NFTABLES<<8|m.typ, uint16(flags), base+1+uint32(i), unix.NFPROTO_INET, 0, m.data)
	}
	buf = appendMsg(buf, unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, base+1+uint32(len(msgs)), unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)
	if len(buf)+4096 > c.sndbuf {
		// netlink refuses a message larger than the send buffer; the
		// kernel doubles what is asked.
		want := len(buf) + 4096
		if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, want); err != nil {
			return fmt.Errorf("size netlink send buffer for a %d-byte transaction: %w", len(buf), err)
		}
		c.sndbuf = want
	}
	if err := unix.Sendto(c.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		c.reset()
		return fmt.Errorf("send nf_tables transaction (%d messages): %w", len(msgs), err)
	}
	last := base + uint32(len(msgs))
	var first *TxError
	rbuf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(c.fd, rbuf, 0)
		if err != nil {
			c.reset()
			if errors.Is(err, unix.EAGAIN) {
				err = fmt.Errorf("no answer within %v: %w", c.timeout, os.ErrDeadlineExceeded)
			}
			return fmt.Errorf("read nf_tables transaction outcome: %w", err)
		}
		done := false
		for _, m := range splitMsgs(rbuf[:n]) {
			if m.typ != unix.NLMSG_ERROR || len(m.body) < 4 {
				continue
			}
			errno := -int32(binary.NativeEndian.Uint32(m.body[:4]))
			if errno != 0 && first == nil {
				idx := int(m.seq) - int(base) - 1
				if idx < 0 || idx >= len(msgs) {
					idx = -1
				}
				first = &TxError{Index: idx, Errno: syscall.Errno(errno), Msg: extAckMsg(m)}
			}
			if m.seq == last {
				done = true
			}
		}
		if done {
			break
		}
	}
	if first != nil {
		return first
	}
	return nil
}

type rawMsg struct {
	typ, flags uint16
	seq        uint32
	body       []byte
}

func splitMsgs(b []byte) []rawMsg {
	var out []rawMsg
	for len(b) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < nlmsgHdrLen || l > len(b) {
			break
		}
		out = append(out, rawMsg{
			typ:   binary.NativeEndian.Uint16(b[4:6]),
			flags: binary.NativeEndian.Uint16(b[6:8]),
			seq:   binary.NativeEndian.Uint32(b[8:12]),
			body:  b[nlmsgHdrLen:l],
		})
		if align4(l) >= len(b) {
			break
		}
		b = b[align4(l):]
	}
	return out
}

// extAckMsg returns the extended acknowledgement's message text of an
// NLMSG_ERROR, if the kernel gave one.
func extAckMsg(m rawMsg) string {
	if m.flags&unix.NLM_F_ACK_TLVS == 0 || len(m.body) < 4+nlmsgHdrLen {
		return ""
	}
	off := 4 + nlmsgHdrLen
	if m.flags&unix.NLM_F_CAPPED == 0 {
		off = 4 + int(binary.NativeEndian.Uint32(m.body[4:8]))
	}
	if off > len(m.body) {
		return ""
	}
	ad, err := netlink.NewAttributeDecoder(m.body[align4(off):])
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NLMSGERR_ATTR_MSG {
			return ad.String()
		}
	}
	return ""
}

// dump sends one dump request and returns the bodies (after the nfgenmsg
// header) of the messages of type want that answer it.
func (c *nlConn) dump(typ uint16, flags uint16, data []byte, want uint16) ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ensure(); err != nil {
		return nil, err
	}
	c.seq++
	seq := c.seq
	buf := appendMsg(nil, unix.NFNL_SUBSYS_NFTABLES<<8|typ, unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags, seq, unix.NFPROTO_INET, 0, data)
	if err := unix.Sendto(c.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		c.reset()
		return nil, err
	}
	var out [][]byte
	rbuf := make([]byte, 256<<10)
	for {
		n, _, err := unix.Recvfrom(c.fd, rbuf, 0)
		if err != nil {
			c.reset()
			if errors.Is(err, unix.EAGAIN) {
				err = fmt.Errorf("no answer within %v: %w", c.timeout, os.ErrDeadlineExceeded)
			}
			return nil, err
		}
		for _, m := range splitMsgs(rbuf[:n]) {
			if m.seq != seq {
				continue // a late answer to an earlier request
			}
			switch {
			case m.typ == unix.NLMSG_DONE:
				return out, nil
			case m.typ == unix.NLMSG_ERROR:
				if len(m.body) >= 4 {
					if errno := -int32(binary.NativeEndian.Uint32(m.body[:4])); errno != 0 {
						return nil, syscall.Errno(errno)
					}
				}
				if flags&unix.NLM_F_DUMP == 0 {
					return out, nil // the ack after a single answer
				}
			case m.typ == unix.NFNL_SUBSYS_NFTABLES<<8|want && len(m.body) >= 4:
				out = append(out, append([]byte(nil), m.body[4:]...))
			}
		}
	}
}

// inNamespace runs fn inside the network namespace at path ("" is the
// caller's own).
func inNamespace(path string, fn func() error) error { return netns.Do(path, fn) }
