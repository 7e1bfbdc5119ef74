package ipvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// rtnlBatch is how many address commands go in one datagram.
const rtnlBatch = 256

// errRtnlTimeout: the kernel did not answer an address batch in time; the
// socket is closed and reopened by the next call.
var errRtnlTimeout = errors.New("no answer from the kernel before the deadline (rtnetlink)")

// rtnlSocket adds and deletes interface addresses many per datagram: one
// RTM_NEWADDR or RTM_DELADDR per address, each acknowledged on its own and
// matched to its address by sequence number. (vishvananda/netlink makes a
// round trip per address, with deadline bookkeeping that costs more than the
// kernel's work under User-Mode Linux.)
type rtnlSocket struct {
	fd  int
	seq uint32
	buf []byte
}

// openRtnl opens a route netlink socket inside the namespace at nsPath.
func openRtnl(nsPath string, timeout time.Duration) (*rtnlSocket, error) {
	fd := -1
	err := inNamespace(nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("set rtnetlink socket timeout: %w", err)
		}
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind rtnetlink socket: %w", err)
	}
	return &rtnlSocket{fd: fd, buf: make([]byte, 64<<10)}, nil
}

func (s *rtnlSocket) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// appendAddrMsg appends one RTM_NEWADDR or RTM_DELADDR for a host address
// (/32 or /128) on the interface ifindex.
func appendAddrMsg(b []byte, add bool, ifindex int, a netip.Addr, seq uint32) []byte {
	start := len(b)
	typ, flags := uint16(unix.RTM_DELADDR), uint16(unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	if add {
		typ, flags = unix.RTM_NEWADDR, flags|unix.NLM_F_CREATE|unix.NLM_F_EXCL
	}
	b = append(b, make([]byte, unix.SizeofNlMsghdr)...)
	ne := binary.NativeEndian
	ne.PutUint16(b[start+4:], typ)
	ne.PutUint16(b[start+6:], flags)
	ne.PutUint32(b[start+8:], seq)
	family, bits, ifaFlags := byte(unix.AF_INET), byte(32), byte(0)
	if a.Is6() {
		// Usable at once: no duplicate address detection on a VIP.
		family, bits, ifaFlags = unix.AF_INET6, 128, unix.IFA_F_NODAD
	}
	// struct ifaddrmsg: family, prefixlen, flags, scope, index.
	b = append(b, family, bits, ifaFlags, unix.RT_SCOPE_UNIVERSE)
	b = ne.AppendUint32(b, uint32(ifindex))
	raw := a.AsSlice()
	attrs := []uint16{unix.IFA_ADDRESS}
	if a.Is4() {
		attrs = append(attrs, unix.IFA_LOCAL)
	}
	for _, t := range attrs {
		b = ne.AppendUint16(b, uint16(unix.SizeofRtAttr+len(raw)))
		b = ne.AppendUint16(b, t)
		b = append(b, raw...) // 4 or 16 bytes: already aligned
	}
	ne.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// do runs address ops (AddAddress, DeleteAddress) on the interface ifindex
// and returns each one's kernel answer. A transport failure fails the ops
// without an answer and leaves the socket closed.
func (s *rtnlSocket) do(ifindex int, ops []Op) []error {
	errs := make([]error, len(ops))
	for start := 0; start < len(ops); start += rtnlBatch {
		end := min(start+rtnlBatch, len(ops))
		if err := s.batch(ifindex, ops[start:end], errs[start:end]); err != nil {
			for i := start; i < len(ops); i++ {
				if errs[i] == nil {
					errs[i] = err
				}
			}
			return errs
		}
	}
	return errs
}

func (s *rtnlSocket) batch(ifindex int, ops []Op, errs []error) error {
	if s.fd < 0 {
		return errors.New("rtnetlink socket closed")
	}
	first := s.seq + 1
	msg := s.buf[:0]
	for _, op := range ops {
		s.seq++
		msg = appendAddrMsg(msg, op.Kind == AddAddress, ifindex, op.Addr, s.seq)
	}
	if err := unix.Sendto(s.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		s.close()
		return fmt.Errorf("send address batch: %w", err)
	}
	answered := make([]bool, len(ops))
	pending := len(ops)
	rbuf := make([]byte, 64<<10)
	for pending > 0 {
		n, _, err := unix.Recvfrom(s.fd, rbuf, 0)
		if err != nil {
			s.close()
			for i := range errs {
				if !answered[i] {
					if errors.Is(err, unix.EAGAIN) {
						errs[i] = errRtnlTimeout
					} else {
						errs[i] = fmt.Errorf("receive address acknowledgements: %w", err)
					}
				}
			}
			return nil
		}
		got, err := consumeAcks(rbuf[:n], first, answered, errs)
		if err != nil {
			s.close()
			return err
		}
		pending -= got
	}
	return nil
}

// consumeAcks reads one datagram of rtnetlink answers to a batch whose
// first command had sequence number first: each acknowledgement marks its
// command answered and sets its error (nil for success). It returns how
// many commands it answered; answers to other sequence numbers, and
// repeated ones, are ignored.
func consumeAcks(datagram []byte, first uint32, answered []bool, errs []error) (int, error) {
	msgs, err := syscall.ParseNetlinkMessage(datagram)
	if err != nil {
		return 0, fmt.Errorf("parse rtnetlink answer: %w", err)
	}
	got := 0
	for _, m := range msgs {
		i := int64(m.Header.Seq) - int64(first)
		if m.Header.Type != unix.NLMSG_ERROR || i < 0 || i >= int64(len(answered)) || answered[i] || len(m.Data) < 4 {
			continue
		}
		if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
			errs[i] = syscall.Errno(-code)
		}
		answered[i] = true
		got++
	}
	return got, nil
}
