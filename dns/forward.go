package dns

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// markerOption is the EDNS0 option code (from the local/experimental range,
// RFC 6891 section 9) that a forwarded query carries with the forwarding
// server's random ID. A server that receives a query bearing its own ID is
// in a forwarding loop and answers SERVFAIL instead of forwarding again.
const markerOption = 65432

// forwarder sends questions outside the zone to upstream resolvers.
type forwarder struct {
	upstreams []string // ip:port, tried in order
	timeout   time.Duration
	marker    []byte // our server ID
	udp, tcp  *mdns.Client
}

func newForwarder(upstreams []string, timeout time.Duration) *forwarder {
	id := make([]byte, 8)
	_, _ = rand.Read(id) // crypto/rand.Read never fails
	return &forwarder{
		upstreams: upstreams,
		timeout:   timeout,
		marker:    id,
		udp:       &mdns.Client{Net: "udp", UDPSize: ednsSize, Timeout: timeout},
		tcp:       &mdns.Client{Net: "tcp", Timeout: timeout},
	}
}

// looped says whether r was forwarded by this very server.
func (f *forwarder) looped(r *mdns.Msg) bool {
	opt := r.IsEdns0()
	if opt == nil {
		return false
	}
	for _, o := range opt.Option {
		if l, ok := o.(*mdns.EDNS0_LOCAL); ok && l.Code == markerOption && bytes.Equal(l.Data, f.marker) {
			return true
		}
	}
	return false
}

// upstreamQuery is the query we send upstream for r: its question, RD and
// CD, a fresh ID, and our own OPT (payload size, the client's DO bit, the
// markers of servers it already went through and ours). The client's other
// options (cookies, client subnet) are its business with us, not upstream's.
func (f *forwarder) upstreamQuery(r *mdns.Msg) *mdns.Msg {
	m := new(mdns.Msg)
	m.Id = mdns.Id()
	m.Opcode = r.Opcode
	m.RecursionDesired = r.RecursionDesired
	m.CheckingDisabled = r.CheckingDisabled
	m.Question = []mdns.Question{r.Question[0]}
	opt := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
	opt.SetUDPSize(ednsSize)
	if ro := r.IsEdns0(); ro != nil {
		opt.SetDo(ro.Do())
		for _, o := range ro.Option {
			if l, ok := o.(*mdns.EDNS0_LOCAL); ok && l.Code == markerOption {
				opt.Option = append(opt.Option, l)
			}
		}
	}
	opt.Option = append(opt.Option, &mdns.EDNS0_LOCAL{Code: markerOption, Data: f.marker})
	m.Extra = []mdns.RR{opt}
	return m
}

// errAllUpstreamsFailed is returned when no upstream gave a usable answer.
var errAllUpstreamsFailed = errors.New("every upstream failed")

// exchange asks each upstream in turn until one answers with something other
// than SERVFAIL, REFUSED or NOTIMP. Over UDP, a truncated answer is asked
// again over TCP. failed is called once per failed upstream.
func (f *forwarder) exchange(ctx context.Context, r *mdns.Msg, overTCP bool, failed func(upstream string, err error)) (*mdns.Msg, error) {
	if len(f.upstreams) == 0 {
		return nil, fmt.Errorf("%w: none configured", errAllUpstreamsFailed)
	}
	m := f.upstreamQuery(r)
	var errs []error
	for _, up := range f.upstreams {
		resp, err := f.exchangeOne(ctx, m, up, overTCP)
		if err == nil {
			switch resp.Rcode {
			case mdns.RcodeServerFailure, mdns.RcodeRefused, mdns.RcodeNotImplemented:
				err = fmt.Errorf("upstream answered %s", mdns.RcodeToString[resp.Rcode])
			}
		}
		if err == nil {
			return resp, nil
		}
		err = fmt.Errorf("forward %s to %s: %w", r.Question[0].Name, up, err)
		failed(up, err)
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w: %w", errAllUpstreamsFailed, errors.Join(errs...))
}

func (f *forwarder) exchangeOne(ctx context.Context, m *mdns.Msg, up string, overTCP bool) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if !overTCP {
		resp, _, err := f.udp.ExchangeContext(ctx, m, up)
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			return nil, fmt.Errorf("udp: %w", err)
		}
		// An answer too big for our buffer is as good as truncated.
		if err != nil && !errors.Is(err, mdns.ErrBuf) && !strings.Contains(err.Error(), "overflow") {
			return nil, fmt.Errorf("udp: %w", err)
		}
		if err != nil {
			resp = &mdns.Msg{MsgHdr: mdns.MsgHdr{Truncated: true}, Question: m.Question}
		}
		if err := sameQuestion(resp, m); err != nil {
			return nil, fmt.Errorf("udp: %w", err)
		}
		if !resp.Truncated {
			return resp, nil
		}
	}
	resp, _, err := f.tcp.ExchangeContext(ctx, m, up)
	if err != nil {
		return nil, fmt.Errorf("tcp: %w", err)
	}
	if err := sameQuestion(resp, m); err != nil {
		return nil, fmt.Errorf("tcp: %w", err)
	}
	return resp, nil
}

// sameQuestion checks that an upstream answered the question we asked.
func sameQuestion(resp, m *mdns.Msg) error {
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) ||
		resp.Question[0].Qtype != m.Question[0].Qtype || resp.Question[0].Qclass != m.Question[0].Qclass {
		return errors.New("answer is for another question")
	}
	return nil
}
