package ipvs

// This is the only file that imports github.com/moby/ipvs.

import (
	"fmt"
	"net"
	"net/netip"

	mobyipvs "github.com/moby/ipvs"

	"github.com/l4lb/l4lb/vip"
)

// mobyClient sends IPVS commands through github.com/moby/ipvs, one command
// per netlink round trip. It is the fallback to genlClient and the
// reference the benchmarks compare with.
type mobyClient struct {
	h *mobyipvs.Handle
}

func openMoby(nsPath string) (ipvsClient, error) {
	h, err := mobyipvs.New(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open IPVS netlink socket (moby/ipvs): %w", err)
	}
	return &mobyClient{h: h}, nil
}

func toMobyService(s Service) *mobyipvs.Service {
	return &mobyipvs.Service{
		Address:       net.IP(s.Addr.AsSlice()),
		Protocol:      protoNumber(s.Protocol),
		Port:          s.Port,
		SchedName:     s.Scheduler,
		Flags:         svcFlags(s),
		Timeout:       s.Persistence,
		Netmask:       netmaskOf(s.Addr),
		AddressFamily: familyOf(s.Addr),
	}
}

func toMobyDest(d Destination) *mobyipvs.Destination {
	return &mobyipvs.Destination{
		Address:         net.IP(d.Addr.Addr().AsSlice()),
		Port:            d.Addr.Port(),
		Weight:          int(d.Weight),
		ConnectionFlags: uint32(d.Forward),
		AddressFamily:   familyOf(d.Addr.Addr()),
	}
}

func (c *mobyClient) services() ([]Service, error) {
	ms, err := c.h.GetServices()
	if err != nil {
		return nil, err
	}
	out := make([]Service, 0, len(ms))
	for _, m := range ms {
		if m.FWMark != 0 {
			continue
		}
		proto, ok := protoOf(m.Protocol)
		addr, ok2 := netip.AddrFromSlice(m.Address)
		if !ok || !ok2 {
			continue
		}
		out = append(out, Service{
			ServiceKey:  vip.ServiceKey{Addr: addr.Unmap(), Port: m.Port, Protocol: proto},
			Scheduler:   m.SchedName,
			Persistence: persistenceOf(m.Flags, m.Timeout),
		})
	}
	return out, nil
}

func (c *mobyClient) destinations(s Service) ([]Destination, error) {
	md, err := c.h.GetDestinations(toMobyService(s))
	if err != nil {
		return nil, err
	}
	out := make([]Destination, 0, len(md))
	for _, m := range md {
		addr, ok := netip.AddrFromSlice(m.Address)
		if !ok {
			continue
		}
		out = append(out, Destination{
			Addr:          netip.AddrPortFrom(addr.Unmap(), m.Port),
			Weight:        uint32(m.Weight),
			Forward:       Forward(m.ConnectionFlags & 0x7),
			ActiveConns:   uint32(m.ActiveConnections),
			InactiveConns: uint32(m.InactiveConnections),
			Traffic:       mobyTraffic(&m.Stats),
		})
	}
	return out, nil
}

func (c *mobyClient) do(ops []Op) []error {
	errs := make([]error, len(ops))
	for i, op := range ops {
		s := toMobyService(op.Service)
		switch op.Kind {
		case AddService:
			errs[i] = c.h.NewService(s)
		case UpdateService:
			errs[i] = c.h.UpdateService(s)
		case DeleteService:
			errs[i] = c.h.DelService(s)
		case AddDestination:
			errs[i] = c.h.NewDestination(s, toMobyDest(op.Destination))
		case UpdateDestination:
			errs[i] = c.h.UpdateDestination(s, toMobyDest(op.Destination))
		case DeleteDestination:
			errs[i] = c.h.DelDestination(s, toMobyDest(op.Destination))
		default:
			errs[i] = fmt.Errorf("not an IPVS command: %s", op.Kind)
		}
	}
	return errs
}

func (c *mobyClient) close() { c.h.Close() }

// mobyTraffic converts moby's 32-bit view of the kernel's counters.
func mobyTraffic(s *mobyipvs.DstStats) Traffic {
	if s == nil {
		return Traffic{}
	}
	return Traffic{Conns: uint64(s.Connections), InPkts: uint64(s.PacketsIn), OutPkts: uint64(s.PacketsOut),
		InBytes: s.BytesIn, OutBytes: s.BytesOut, CPS: uint64(s.CPS), InPPS: uint64(s.PPSIn), OutPPS: uint64(s.PPSOut),
		InBPS: uint64(s.BPSIn), OutBPS: uint64(s.BPSOut)}
}
