package genl

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzAnswers feeds arbitrary datagrams to every collector of kernel
// answers, as the client does with what it receives. Nothing may panic, the
// batch bookkeeping must stay consistent, and whatever decodes as a service
// or real server must survive being sent back and read again unchanged.
func FuzzAnswers(f *testing.F) {
	const pid, seq, fam = 77, 1000, 0x22
	svc := Service{Family: unix.AF_INET6, Protocol: unix.IPPROTO_TCP, Addr: netip.MustParseAddr("fd01:c::1"), Port: 80, Sched: "mh", Flags: FlagSched1, Netmask: 128}
	dst := Dest{Family: unix.AF_INET, Addr: netip.MustParseAddr("10.0.0.2"), Port: 8080, Weight: 1, ActiveConns: 2}
	f.Add(cat(ackMsg(seq+1, pid, unix.EEXIST, "exists"), ackMsg(seq+3, pid, 0, "")))
	f.Add(cat(kernelMsg(fam, unix.NLM_F_MULTI, seq, pid, kernelServicePayload(svc)), kernelMsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, pid, u32b(0))))
	f.Add(cat(kernelMsg(fam, unix.NLM_F_MULTI, seq, pid, kernelDestPayload(dst)), kernelMsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, pid, errCode(unix.EINTR))))
	f.Add(kernelMsg(unix.GENL_ID_CTRL, 0, seq, pid, cat([]byte{1, 2, 0, 0}, attr(attrCtrlFamilyID, u16b(fam)))))
	f.Fuzz(func(t *testing.T, datagram []byte) {
		a := newBatchAnswers(pid, seq, 4)
		if a.consume(datagram) == nil {
			for i, err := range a.errs {
				if err != nil && !a.answered[i] {
					t.Fatalf("command %d has an error but no answer", i)
				}
			}
			if a.done && !a.answered[3] {
				t.Fatal("done without the last command's answer")
			}
		}
		for _, dests := range []bool{false, true} {
			d := &dumpAnswers{pid: pid, seq: seq, family: fam, dests: dests, svcFamily: unix.AF_INET}
			_ = d.consume(datagram)
			for _, s := range d.services {
				checkServiceResends(t, s)
			}
			for _, x := range d.destList {
				checkDestResends(t, x)
			}
		}
		fa := &familyAnswer{pid: pid, seq: seq}
		_ = fa.consume(datagram)
	})
}

func checkServiceResends(t *testing.T, s Service) {
	want, err := s.Normalize()
	if err != nil {
		t.Fatalf("decoded service %+v does not normalize: %v", s, err)
	}
	b, err := appendOp(nil, 0x22, unix.NLM_F_REQUEST, 1, Op{Cmd: NewService, Service: s})
	if err != nil {
		t.Fatalf("decoded service %+v cannot be sent: %v", s, err)
	}
	got, err := decodeService(b[nlmsgHdrLen:])
	if err != nil || got != want {
		t.Fatalf("service %+v resent decodes to %+v, %v; want %+v", s, got, err, want)
	}
}

func checkDestResends(t *testing.T, d Dest) {
	want, err := d.Normalize()
	if err != nil {
		t.Fatalf("decoded real server %+v does not normalize: %v", d, err)
	}
	svc := Service{Family: unix.AF_INET, FWMark: 1}
	b, err := appendOp(nil, 0x22, unix.NLM_F_REQUEST, 1, Op{Cmd: NewDest, Service: svc, Dest: d})
	if err != nil {
		t.Fatalf("decoded real server %+v cannot be sent: %v", d, err)
	}
	got, err := decodeDest(b[nlmsgHdrLen:], 0)
	if err != nil || got != want {
		t.Fatalf("real server %+v resent decodes to %+v, %v; want %+v", d, got, err, want)
	}
}
