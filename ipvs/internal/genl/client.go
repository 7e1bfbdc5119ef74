package genl

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// DefaultBatchSize is how many commands Do packs into one datagram.
	DefaultBatchSize = 256
	// DefaultTimeout bounds each exchange with the kernel.
	DefaultTimeout = 10 * time.Second

	// recvBufSize holds the largest datagram the kernel sends: dump
	// datagrams are capped at 32 KiB.
	recvBufSize = 64 << 10
	// sockBufSize is asked for both socket buffers, so that a full batch and
	// the failures it may cause fit without the kernel dropping answers.
	sockBufSize = 4 << 20
)

// Client is a generic-netlink socket to the kernel's IPVS, in one network
// namespace. Its methods may be called from several goroutines; they run one
// at a time.
type Client struct {
	mu sync.Mutex // guards every field below: one exchange at a time
	// fd is the netlink socket, -1 once closed or when a reopen failed.
	fd int
	// lost is why fd is -1 after a failed reopen.
	lost error
	// portID is the socket's netlink port, the pid of the kernel's answers.
	portID uint32
	// netnsFd is the namespace the socket lives in, -1 for the caller's.
	netnsFd   int
	nsPath    string
	family    uint16 // the IPVS family id
	seq       uint32 // the last sequence number used
	timeout   time.Duration
	batchSize int
	ackAll    bool
	closed    bool
	sendBuf   []byte
	recvBuf   []byte
	counters  Counters
}

// Counters counts a client's traffic with the kernel.
type Counters struct {
	Commands      uint64 // commands sent
	DatagramsSent uint64 // sendto calls
	DatagramsRecv uint64 // datagrams received
	Reopens       uint64 // sockets reopened after a timeout or loss
}

// Open opens a client in the network namespace bound at nsPath
// ("/run/netns/lb"), or in the caller's namespace when nsPath is "". The
// socket is created inside that namespace on a thread of its own, and stays
// there. It fails with ErrNoIPVS when the kernel has no IPVS.
func Open(nsPath string) (*Client, error) {
	c := &Client{fd: -1, netnsFd: -1, nsPath: nsPath, timeout: DefaultTimeout, batchSize: DefaultBatchSize}
	if nsPath != "" {
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", nsPath, err)
		}
		c.netnsFd = fd
	}
	c.recvBuf = make([]byte, recvBufSize)
	if err := c.openSocket(); err != nil {
		c.closeFds()
		return nil, fmt.Errorf("open IPVS netlink client%s: %w", c.where(), err)
	}
	id, err := c.resolveFamily("IPVS")
	if err != nil {
		c.closeFds()
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("open IPVS netlink client%s: %w: %w", c.where(), ErrNoIPVS, err)
		}
		return nil, fmt.Errorf("open IPVS netlink client%s: %w", c.where(), err)
	}
	c.family = id
	return c, nil
}

func (c *Client) where() string {
	if c.nsPath == "" {
		return ""
	}
	return " in " + c.nsPath
}

// SetTimeout bounds each exchange with the kernel: each wait for its next
// datagram lasts at most d, and an exchange that keeps receiving is cut off
// within about 2*d. d <= 0 waits for ever. When an exchange times out, the
// socket is reopened so that late answers cannot be mistaken for later ones.
func (c *Client) SetTimeout(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timeout = d
	if c.fd >= 0 {
		_ = setTimeouts(c.fd, d)
	}
}

// SetBatchSize sets how many commands Do packs into one datagram; n < 1
// means 1 (one command per datagram).
func (c *Client) SetBatchSize(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batchSize = max(n, 1)
}

// SetAckAll makes the kernel acknowledge every command, not only the
// failures and the last command of each datagram. It costs one receive per
// command and changes no result; it exists to measure that cost.
func (c *Client) SetAckAll(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ackAll = on
}

// Counters returns the client's traffic counters.
func (c *Client) Counters() Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counters
}

// Do runs ops in order and returns each one's result: errs[i] is nil when
// ops[i] succeeded, or an error that names the command and wraps the
// kernel's errno (errors.Is(err, unix.EEXIST), unix.ESRCH, unix.ENOENT...).
// A failed command does not stop the ones after it, as with the kernel
// itself. Commands that cannot be encoded fail with ErrInvalid and are not
// sent. When an exchange fails at the transport level (ErrTimeout,
// ErrAckLost), the commands of that datagram without an answer fail with
// that error, their outcome unknown, and the later ones with ErrNotSent.
func (c *Client) Do(ops []Op) []error {
	errs := make([]error, len(ops))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		for i, op := range ops {
			errs[i] = fmt.Errorf("%s: %w", op, err)
		}
		return errs
	}
	sent := make([]int, 0, min(c.batchSize, len(ops)))
	for start := 0; start < len(ops); {
		end := min(start+c.batchSize, len(ops))
		if err := c.doBatch(ops[start:end], errs[start:end], sent[:0]); err != nil {
			for i := end; i < len(ops); i++ {
				errs[i] = fmt.Errorf("%s: %w after an earlier failure: %w", ops[i], ErrNotSent, err)
			}
			break
		}
		start = end
	}
	return errs
}

// doBatch sends ops in one datagram and fills errs; sent is scratch space.
// It returns the transport error, if any.
func (c *Client) doBatch(ops []Op, errs []error, sent []int) error {
	b := c.sendBuf[:0]
	first := c.seq + 1
	last := -1 // offset of the last message in b
	for i, op := range ops {
		flags := uint16(unix.NLM_F_REQUEST)
		if c.ackAll {
			flags |= unix.NLM_F_ACK
		}
		at := len(b)
		var err error
		b, err = appendOp(b, c.family, flags, first+uint32(len(sent)), op)
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", op, err)
			continue
		}
		last = at
		sent = append(sent, i)
	}
	c.sendBuf = b
	if len(sent) == 0 {
		return nil
	}
	// The last command is always acknowledged: its answer ends the exchange.
	native.PutUint16(b[last+6:], native.Uint16(b[last+6:])|unix.NLM_F_ACK)
	c.seq = first + uint32(len(sent)) - 1
	c.counters.Commands += uint64(len(sent))

	answers := newBatchAnswers(c.portID, first, len(sent))
	err := c.exchange(b, answers.consume, answers.finished)
	for k, i := range sent {
		switch {
		case answers.errs[k] != nil:
			errs[i] = fmt.Errorf("%s: %w", ops[i], answers.errs[k])
		case answers.done || answers.answered[k]:
		default:
			errs[i] = fmt.Errorf("%s: outcome unknown: %w", ops[i], err)
		}
	}
	return err
}

// Services lists the kernel's virtual services, in the form of
// Service.Normalize.
func (c *Client) Services() ([]Service, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	d, err := c.dump(func(seq uint32) []byte {
		b := appendMsgHeader(c.sendBuf[:0], c.family, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq, cmdGetService)
		finishMsg(b, 0)
		return b
	}, false, 0)
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	return d.services, nil
}

// Dests lists the real servers of service s. The kernel answers a service
// that does not exist with an empty list, not an error.
func (c *Client) Dests(s Service) ([]Dest, error) {
	svc, err := s.Normalize()
	if err != nil {
		return nil, fmt.Errorf("list real servers of %s: %w", s, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		return nil, fmt.Errorf("list real servers of %s: %w", s, err)
	}
	d, err := c.dump(func(seq uint32) []byte {
		b := appendMsgHeader(c.sendBuf[:0], c.family, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq, cmdGetDest)
		b = appendServiceAttr(b, svc, false)
		finishMsg(b, 0)
		return b
	}, true, svc.Family)
	if err != nil {
		return nil, fmt.Errorf("list real servers of %s: %w", s, err)
	}
	return d.destList, nil
}

// dumpAttempts is how often a dump is retried when the table changes
// under it.
const dumpAttempts = 3

func (c *Client) dump(request func(seq uint32) []byte, dests bool, svcFamily uint16) (*dumpAnswers, error) {
	for range dumpAttempts {
		c.seq++
		d := &dumpAnswers{pid: c.portID, seq: c.seq, family: c.family, dests: dests, svcFamily: svcFamily}
		req := request(c.seq)
		c.sendBuf = req
		if err := c.exchange(req, d.consume, d.finished); err != nil {
			return nil, err
		}
		if d.err != nil {
			return nil, d.err
		}
		if !d.interrupted {
			return d, nil
		}
	}
	return nil, ErrDumpInterrupted
}

// Flush deletes every virtual service and its real servers.
func (c *Client) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		return fmt.Errorf("flush IPVS: %w", err)
	}
	c.seq++
	b := appendMsgHeader(c.sendBuf[:0], c.family, unix.NLM_F_REQUEST|unix.NLM_F_ACK, c.seq, cmdFlush)
	finishMsg(b, 0)
	c.sendBuf = b
	a := newBatchAnswers(c.portID, c.seq, 1)
	if err := c.exchange(b, a.consume, a.finished); err != nil {
		return fmt.Errorf("flush IPVS: %w", err)
	}
	if a.errs[0] != nil {
		return fmt.Errorf("flush IPVS: %w", a.errs[0])
	}
	return nil
}

// Close closes the socket. Calls after Close fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.closeFds()
}

func (c *Client) closeFds() error {
	var err error
	if c.fd >= 0 {
		err = unix.Close(c.fd)
		c.fd = -1
	}
	if c.netnsFd >= 0 {
		_ = unix.Close(c.netnsFd)
		c.netnsFd = -1
	}
	if err != nil {
		return fmt.Errorf("close IPVS netlink socket: %w", err)
	}
	return nil
}

// usable says why the client cannot talk to the kernel, if it cannot.
func (c *Client) usable() error {
	switch {
	case c.closed:
		return ErrClosed
	case c.fd < 0 && c.lost != nil:
		return fmt.Errorf("netlink socket lost: %w", c.lost)
	case c.fd < 0:
		return ErrClosed
	}
	return nil
}

// resolveFamily asks the generic-netlink controller for a family's id.
func (c *Client) resolveFamily(name string) (uint16, error) {
	c.seq++
	b := appendMsgHeader(nil, unix.GENL_ID_CTRL, unix.NLM_F_REQUEST|unix.NLM_F_ACK, c.seq, unix.CTRL_CMD_GETFAMILY)
	b = appendStringAttr(b, attrCtrlFamilyName, name)
	finishMsg(b, 0)
	f := &familyAnswer{pid: c.portID, seq: c.seq}
	if err := c.exchange(b, f.consume, f.finished); err != nil {
		return 0, fmt.Errorf("resolve generic-netlink family %q: %w", name, err)
	}
	if f.err != nil {
		return 0, fmt.Errorf("resolve generic-netlink family %q: %w", name, f.err)
	}
	return f.id, nil
}

// exchange sends req and feeds the datagrams received to consume until
// finished, within the client's timeout. After a transport failure it
// reopens the socket, so no late answer is read as a later one.
func (c *Client) exchange(req []byte, consume func([]byte) error, finished func() bool) error {
	err := c.roundTrip(req, consume, finished)
	if err != nil {
		c.reopen()
	}
	return err
}

func (c *Client) roundTrip(req []byte, consume func([]byte) error, finished func() bool) error {
	// Each receive waits at most the timeout (SO_RCVTIMEO). The clock is
	// read only when an answer takes more than one datagram, and then once
	// every clockEvery datagrams: in the UML guest reading it is a system
	// call, as dear as a receive.
	var deadline time.Time
	datagrams := 0
	for {
		err := unix.Sendto(c.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN || err == unix.EWOULDBLOCK {
			return fmt.Errorf("send: %w", ErrTimeout)
		}
		if err != nil {
			return fmt.Errorf("send to netlink: %w", err)
		}
		break
	}
	c.counters.DatagramsSent++
	for !finished() {
		n, from, err := unix.Recvfrom(c.fd, c.recvBuf, unix.MSG_TRUNC)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN || err == unix.EWOULDBLOCK:
			return fmt.Errorf("after %s: %w", c.timeout, ErrTimeout)
		case err == unix.ENOBUFS:
			return fmt.Errorf("%w: %w", ErrAckLost, err)
		case err != nil:
			return fmt.Errorf("receive from netlink: %w", err)
		}
		c.counters.DatagramsRecv++
		if n > len(c.recvBuf) {
			return fmt.Errorf("netlink datagram of %d bytes does not fit the %d-byte buffer", n, len(c.recvBuf))
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		if err := consume(c.recvBuf[:n]); err != nil {
			return fmt.Errorf("malformed answer from the kernel: %w", err)
		}
		datagrams++
		if c.timeout > 0 && !finished() && datagrams%clockEvery == 1 {
			if deadline.IsZero() {
				deadline = time.Now().Add(c.timeout)
			} else if time.Now().After(deadline) {
				return fmt.Errorf("after %s: %w", c.timeout, ErrTimeout)
			}
		}
	}
	return nil
}

// clockEvery is how many datagrams of one exchange pass between two reads
// of the clock.
const clockEvery = 64

// reopen replaces the socket with a new one in the same namespace.
func (c *Client) reopen() {
	if c.fd >= 0 {
		_ = unix.Close(c.fd)
		c.fd = -1
	}
	c.counters.Reopens++
	if err := c.openSocket(); err != nil {
		c.lost = err
	}
}

// openSocket opens and binds the netlink socket, in the client's namespace.
func (c *Client) openSocket() error {
	var fd int
	var err error
	if c.netnsFd < 0 {
		fd, err = newSocket(c.timeout)
	} else {
		fd, err = inNetns(c.netnsFd, func() (int, error) { return newSocket(c.timeout) })
	}
	if err != nil {
		return err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("netlink socket address: %w", err)
	}
	nsa, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		unix.Close(fd)
		return fmt.Errorf("netlink socket has a %T address", sa)
	}
	c.fd, c.portID, c.lost = fd, nsa.Pid, nil
	return nil
}

// newSocket opens a blocking generic-netlink socket: a blocking receive is
// one system call, where the runtime's poller would add more.
func newSocket(timeout time.Duration) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return -1, fmt.Errorf("generic netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind netlink socket: %w", err)
	}
	for _, opt := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt[0], sockBufSize) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt[1], sockBufSize) // capped by the sysctl; best effort
		}
	}
	// Failures come back with the request's header only, and with the
	// kernel's message when it has one. Old kernels lack both; that is fine.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	if err := setTimeouts(fd, timeout); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func setTimeouts(fd int, d time.Duration) error {
	tv := unix.NsecToTimeval(max(d, 0).Nanoseconds())
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return fmt.Errorf("set netlink socket timeout: %w", err)
		}
	}
	return nil
}

// inNetns runs open on a fresh thread that has entered the namespace nsFd.
// The thread is never returned to the runtime's pool: its goroutine ends
// locked, so the runtime discards it, and no other goroutine ever runs in
// the wrong namespace.
func inNetns(nsFd int, open func() (int, error)) (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(nsFd, unix.CLONE_NEWNET); err != nil {
			done <- result{-1, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		fd, err := open()
		done <- result{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}
