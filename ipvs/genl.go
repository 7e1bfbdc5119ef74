package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/l4lb/l4lb/ipvs/internal/genl"
	"github.com/l4lb/l4lb/vip"
)

// genlClient sends IPVS commands through our own batched generic-netlink
// client (internal/genl): many commands per datagram, each answer matched to
// its command by sequence number.
type genlClient struct {
	c *genl.Client
}

func openGenl(nsPath string, timeout time.Duration) (ipvsClient, error) {
	c, err := genl.Open(nsPath)
	if err != nil {
		if errors.Is(err, genl.ErrNoIPVS) {
			return nil, fmt.Errorf("%w (%v)", ErrNoIPVS, err)
		}
		return nil, err
	}
	c.SetTimeout(timeout)
	return &genlClient{c: c}, nil
}

func toGenlService(s Service) genl.Service {
	return genl.Service{
		Family:   familyOf(s.Addr),
		Protocol: protoNumber(s.Protocol),
		Addr:     s.Addr,
		Port:     s.Port,
		Sched:    s.Scheduler,
		Flags:    svcFlags(s),
		Timeout:  s.Persistence,
		Netmask:  netmaskOf(s.Addr),
	}
}

func toGenlDest(d Destination) genl.Dest {
	return genl.Dest{
		Addr:      d.Addr.Addr(),
		Port:      d.Addr.Port(),
		Family:    familyOf(d.Addr.Addr()),
		FwdMethod: uint32(d.Forward),
		Weight:    d.Weight,
	}
}

var genlCmds = map[OpKind]genl.Cmd{
	AddService:        genl.NewService,
	UpdateService:     genl.SetService,
	DeleteService:     genl.DelService,
	AddDestination:    genl.NewDest,
	UpdateDestination: genl.SetDest,
	DeleteDestination: genl.DelDest,
}

func (g *genlClient) services() ([]Service, error) {
	gs, err := g.c.Services()
	if err != nil {
		return nil, err
	}
	out := make([]Service, 0, len(gs))
	for _, s := range gs {
		proto, ok := protoOf(s.Protocol)
		if s.FWMark != 0 || !ok || !s.Addr.IsValid() {
			continue
		}
		out = append(out, Service{
			ServiceKey:  vip.ServiceKey{Addr: s.Addr.Unmap(), Port: s.Port, Protocol: proto},
			Scheduler:   s.Sched,
			Persistence: persistenceOf(s.Flags, s.Timeout),
		})
	}
	return out, nil
}

func (g *genlClient) destinations(s Service) ([]Destination, error) {
	ds, err := g.c.Dests(toGenlService(s))
	if err != nil {
		return nil, err
	}
	out := make([]Destination, 0, len(ds))
	for _, d := range ds {
		out = append(out, Destination{
			Addr:          netip.AddrPortFrom(d.Addr.Unmap(), d.Port),
			Weight:        d.Weight,
			Forward:       Forward(d.FwdMethod & 0x7),
			ActiveConns:   d.ActiveConns,
			InactiveConns: d.InactConns,
			Traffic:       Traffic(d.Stats),
		})
	}
	return out, nil
}

func (g *genlClient) do(ops []Op) []error {
	gops := make([]genl.Op, len(ops))
	for i, op := range ops {
		cmd, ok := genlCmds[op.Kind]
		if !ok {
			cmd = 0 // refused by genl as invalid
		}
		gops[i] = genl.Op{Cmd: cmd, Service: toGenlService(op.Service), Dest: toGenlDest(op.Destination)}
	}
	errs := g.c.Do(gops)
	for i, err := range errs {
		// The kernel's answer is enough: Kernel.Apply names the op.
		var errno syscall.Errno
		if err != nil && errors.As(err, &errno) {
			errs[i] = errno
		}
	}
	return errs
}

func (g *genlClient) close() { _ = g.c.Close() }
