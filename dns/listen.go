package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// udpReadSize is the largest query read over UDP.
const udpReadSize = 4096

// Start listens on UDP and TCP on every Listen address and serves until
// Shutdown or until ctx is done. Each UDP address gets one socket per
// usable CPU (SO_REUSEPORT) so that the kernel spreads queries. It returns
// once every listener is up, or the first error (closing what it opened).
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return errors.New("dns server already started")
	}
	if s.ctx.Err() != nil {
		return errors.New("dns server was shut down")
	}
	sockets := max(1, runtime.GOMAXPROCS(0))
	var servers []*mdns.Server
	var udpConns []*net.UDPConn // served by serveUDP
	var addrs []netip.AddrPort
	closeAll := func() {
		for _, c := range udpConns {
			c.Close()
		}
		for _, srv := range servers {
			if srv.PacketConn != nil {
				srv.PacketConn.Close()
			}
			if srv.Listener != nil {
				srv.Listener.Close()
			}
		}
	}
	for _, ap := range s.cfg.listen {
		pcs, ln, bound, err := listenPair(ap, sockets)
		if err != nil {
			closeAll()
			return err
		}
		for _, pc := range pcs {
			_ = pc.SetReadBuffer(4 << 20) // best effort; the kernel caps it
			if bound.Addr().IsUnspecified() {
				// Replies must leave from the address the query came to:
				// miekg's session (control messages) takes care of it.
				servers = append(servers, s.newListener(pc, nil))
			} else {
				udpConns = append(udpConns, pc)
			}
		}
		servers = append(servers, s.newListener(nil, ln))
		addrs = append(addrs, bound)
	}
	started := make(chan struct{}, len(servers))
	for _, srv := range servers {
		notify := sync.OnceFunc(func() { started <- struct{}{} })
		srv.NotifyStartedFunc = notify
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			defer notify() // Start must not wait for a listener that failed
			if err := srv.ActivateAndServe(); err != nil {
				s.cfg.log.WithField("reason", err.Error()).Error("dns listener stopped")
			}
		}()
	}
	for range servers {
		<-started
	}
	for _, c := range udpConns {
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			s.serveUDP(c)
		}()
	}
	s.servers, s.udpConns, s.addrs, s.running = servers, udpConns, addrs, true
	for _, ap := range addrs {
		s.cfg.log.WithField("reason", "started").Infof("serving DNS on %s (udp, tcp)", ap)
	}
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.Shutdown(sctx)
		case <-s.ctx.Done():
		}
	}()
	return nil
}

// Addrs returns the addresses the server listens on, with the ports the
// kernel chose for port 0; nil when not running.
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.addrs...)
}

// Shutdown stops every listener, cancels forwarded exchanges and waits, up
// to ctx, for the queries being answered.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop()
	if !s.running {
		return errNotRunning
	}
	var errs []error
	for _, c := range s.udpConns {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, srv := range s.servers {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	done := make(chan struct{})
	go func() { s.serving.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	s.running, s.servers, s.udpConns, s.addrs = false, nil, nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shut down dns server: %w", err)
	}
	return nil
}

func (s *Server) newListener(pc net.PacketConn, ln net.Listener) *mdns.Server {
	var decorateWriter mdns.DecorateWriter
	if s.cfg.forward {
		decorateWriter = func(w mdns.Writer) mdns.Writer { return raWriter{w} }
	}
	return &mdns.Server{
		DecorateWriter: decorateWriter,
		PacketConn:     pc,
		Listener:       ln,
		Handler:        s,
		UDPSize:        udpReadSize,
		ReadTimeout:    2 * time.Second,
		WriteTimeout:   2 * time.Second,
		DecorateReader: s.decorateReader,
		MsgAcceptFunc:  s.acceptQuery,
		MsgInvalidFunc: s.invalidQuery,
	}
}

func listenUDP(ap netip.AddrPort, reusePort bool) (*net.UDPConn, error) {
	lc := net.ListenConfig{}
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	pc, err := lc.ListenPacket(context.Background(), "udp", ap.String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// acceptQuery is miekg's default filter, counted: answers are dropped,
// other opcodes get NOTIMP, odd section counts FORMERR.
func (s *Server) acceptQuery(dh mdns.Header) mdns.MsgAcceptAction {
	action := mdns.DefaultMsgAcceptFunc(dh)
	switch action {
	case mdns.MsgIgnore:
		s.stats.dropped.Add(1)
	case mdns.MsgReject:
		s.stats.formErr.Add(1)
		s.stats.reply(mdns.RcodeFormatError)
	case mdns.MsgRejectNotImplemented:
		s.stats.reply(mdns.RcodeNotImplemented)
	}
	return action
}

// invalidQuery counts a query that did not unpack: one shorter than a
// header is dropped, any other is answered FORMERR by miekg.
func (s *Server) invalidQuery(m []byte, _ error) {
	if len(m) < 12 {
		s.stats.dropped.Add(1)
		return
	}
	s.stats.formErr.Add(1)
	s.stats.reply(mdns.RcodeFormatError)
}

// raWriter sets RA in every reply written through it. miekg's server writes
// some replies itself (FORMERR and NOTIMP for what acceptQuery rejects);
// with forwarding on they must say, like ours, that recursion is available.
type raWriter struct{ mdns.Writer }

func (w raWriter) Write(b []byte) (int, error) {
	if len(b) >= 4 {
		b[3] |= bitRA & 0xff
	}
	return w.Writer.Write(b)
}

// decorateReader puts the prepared-answer path in front of the UDP reads:
// a plain query with a prepared answer is answered right in the read loop,
// without unpacking it or starting a goroutine; anything else is handed to
// miekg as read.
func (s *Server) decorateReader(r mdns.Reader) mdns.Reader {
	return &preparedReader{Reader: r, s: s}
}

type preparedReader struct {
	mdns.Reader
	s   *Server
	in  []byte
	out []byte
	key [256]byte
}

// ReadUDP returns the next query that needs the handler. It never sets a
// read deadline, so Shutdown's deadline in the past stays in force.
func (p *preparedReader) ReadUDP(conn *net.UDPConn, _ time.Duration) ([]byte, *mdns.SessionUDP, error) {
	if p.in == nil {
		p.in = make([]byte, udpReadSize)
		p.out = make([]byte, 0, 1024)
	}
	for {
		n, sess, err := mdns.ReadFromSessionUDP(conn, p.in)
		if err != nil {
			return nil, nil, err
		}
		msg := p.in[:n]
		var q query
		if parseQuery(msg, &q, p.key[:]) {
			if out, ok := p.s.zone.Load().fastReply(p.out, &q); ok {
				p.out = out[:0]
				if _, err := mdns.WriteToSessionUDP(conn, out, sess); err != nil {
					p.s.cfg.log.WithField("reason", err.Error()).Debug("write reply")
					continue
				}
				p.s.stats.reply(mdns.RcodeSuccess)
				p.s.stats.authoritative.Add(1)
				p.s.stats.prepared.Add(1)
				continue
			}
		}
		return append([]byte(nil), msg...), sess, nil
	}
}

// serveUDP is the read loop of a UDP socket bound to one address: a plain
// query with a prepared answer is answered right here, without unpacking,
// goroutine or allocation; any other packet is copied and handled in its
// own goroutine. It returns when conn is closed.
func (s *Server) serveUDP(conn *net.UDPConn) {
	in := make([]byte, udpReadSize)
	out := make([]byte, 0, 1024)
	var key [256]byte
	for {
		n, _, _, from, err := conn.ReadMsgUDPAddrPort(in, nil)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.cfg.log.WithField("reason", err.Error()).Debug("udp read")
			time.Sleep(time.Millisecond) // no busy loop on a lasting error
			continue
		}
		msg := in[:n]
		var q query
		if parseQuery(msg, &q, key[:]) {
			if r, ok := s.zone.Load().fastReply(out, &q); ok {
				out = r[:0]
				if _, err := conn.WriteToUDPAddrPort(r, from); err != nil {
					s.cfg.log.WithField("reason", err.Error()).Debug("write reply")
					continue
				}
				s.stats.reply(mdns.RcodeSuccess)
				s.stats.authoritative.Add(1)
				s.stats.prepared.Add(1)
				continue
			}
		}
		pkt := append([]byte(nil), msg...)
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			s.serveUDPPacket(&udpWriter{conn: conn, to: from}, pkt)
		}()
	}
}

// serveUDPPacket does for one packet what miekg's server does before its
// handler: drop what is not a query, FORMERR/NOTIMP what it must not
// handle or cannot unpack, then ServeDNS.
func (s *Server) serveUDPPacket(w *udpWriter, pkt []byte) {
	if len(pkt) < 12 {
		s.invalidQuery(pkt, nil) // too short to answer
		return
	}
	h := mdns.Header{
		Id:      binary.BigEndian.Uint16(pkt[0:]),
		Bits:    binary.BigEndian.Uint16(pkt[2:]),
		Qdcount: binary.BigEndian.Uint16(pkt[4:]),
		Ancount: binary.BigEndian.Uint16(pkt[6:]),
		Nscount: binary.BigEndian.Uint16(pkt[8:]),
		Arcount: binary.BigEndian.Uint16(pkt[10:]),
	}
	rcode := mdns.RcodeFormatError
	switch s.acceptQuery(h) {
	case mdns.MsgIgnore:
		return
	case mdns.MsgRejectNotImplemented:
		rcode = mdns.RcodeNotImplemented
	case mdns.MsgAccept:
		m := new(mdns.Msg)
		if err := m.Unpack(pkt); err == nil {
			s.ServeDNS(w, m)
			return
		}
		s.invalidQuery(pkt, nil)
	}
	// A header-only reply: the question may be what is broken.
	reply := new(mdns.Msg)
	reply.Id = h.Id
	reply.Response = true
	reply.Opcode = int(h.Bits>>11) & 0xf
	reply.RecursionDesired = h.Bits&bitRD != 0
	reply.RecursionAvailable = s.cfg.forward
	reply.Rcode = rcode
	_ = w.WriteMsg(reply)
}

// udpWriter is the ResponseWriter for a query read by serveUDP.
type udpWriter struct {
	conn *net.UDPConn
	to   netip.AddrPort
}

var _ mdns.ResponseWriter = (*udpWriter)(nil)

func (w *udpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.to) }
func (w *udpWriter) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return fmt.Errorf("pack reply: %w", err)
	}
	_, err = w.Write(b)
	return err
}
func (w *udpWriter) Write(b []byte) (int, error) { return w.conn.WriteToUDPAddrPort(b, w.to) }
func (w *udpWriter) Close() error                { return nil }
func (w *udpWriter) TsigStatus() error           { return nil }
func (w *udpWriter) TsigTimersOnly(bool)         {}
func (w *udpWriter) Hijack()                     {}

// listenPair binds sockets UDP sockets and one TCP listener on ap. With port
// 0 the kernel picks the TCP port and the UDP sockets take the same one;
// that port may be taken for UDP (UDP and TCP ports are separate spaces),
// so a few ports are tried before giving up.
func listenPair(ap netip.AddrPort, sockets int) ([]*net.UDPConn, net.Listener, netip.AddrPort, error) {
	attempts := 1
	if ap.Port() == 0 {
		attempts = 8
	}
	var err error
	for try := 0; try < attempts; try++ {
		var ln net.Listener
		ln, err = net.Listen("tcp", ap.String())
		if err != nil {
			return nil, nil, ap, fmt.Errorf("listen tcp %s: %w", ap, err)
		}
		bound := netip.AddrPortFrom(ap.Addr(), uint16(ln.Addr().(*net.TCPAddr).Port))
		var pcs []*net.UDPConn
		for i := 0; i < sockets && err == nil; i++ {
			var pc *net.UDPConn
			if pc, err = listenUDP(bound, sockets > 1); err == nil {
				pcs = append(pcs, pc)
			}
		}
		if err == nil {
			return pcs, ln, bound, nil
		}
		err = fmt.Errorf("listen udp %s: %w", bound, err)
		for _, pc := range pcs {
			pc.Close()
		}
		ln.Close()
	}
	return nil, nil, ap, err
}
