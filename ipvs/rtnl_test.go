package ipvs

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// ack builds one NLMSG_ERROR answer for seq with the given errno (0: success).
func ack(seq uint32, errno unix.Errno) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+4+unix.SizeofNlMsghdr)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.NLMSG_ERROR)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[16:], uint32(-int32(errno)))
	return b
}

func TestAcksAreAttributedBySequence(t *testing.T) {
	var dg []byte
	dg = append(dg, ack(12, 0)...)
	dg = append(dg, ack(10, unix.EEXIST)...)
	dg = append(dg, ack(99, unix.EPERM)...) // another batch's: ignored
	dg = append(dg, ack(12, unix.EPERM)...) // repeated: ignored
	answered := make([]bool, 3)
	errs := make([]error, 3)
	got, err := consumeAcks(dg, 10, answered, errs)
	if err != nil || got != 2 {
		t.Fatalf("consumeAcks = %d, %v; want 2 answers", got, err)
	}
	if !errors.Is(errs[0], unix.EEXIST) || errs[2] != nil || answered[1] || !answered[0] || !answered[2] {
		t.Errorf("answers %v, errors %v", answered, errs)
	}
}

func TestAddrMessagesAreWellFormed(t *testing.T) {
	for _, tc := range []struct {
		addr string
		add  bool
		size int
	}{{"11.0.0.1", true, 16 + 8 + 8 + 8}, {"fd01:c::1", false, 16 + 8 + 20}} {
		t.Run(tc.addr, func(t *testing.T) {
			b := appendAddrMsg(nil, tc.add, 7, netip.MustParseAddr(tc.addr), 42)
			if len(b) != tc.size {
				t.Fatalf("message of %d bytes, want %d", len(b), tc.size)
			}
			msgs, err := syscall.ParseNetlinkMessage(b)
			if err != nil || len(msgs) != 1 || msgs[0].Header.Seq != 42 {
				t.Fatalf("parse back: %v %v", msgs, err)
			}
			wantType := uint16(unix.RTM_DELADDR)
			if tc.add {
				wantType = unix.RTM_NEWADDR
			}
			if msgs[0].Header.Type != wantType || binary.NativeEndian.Uint32(msgs[0].Data[4:8]) != 7 {
				t.Errorf("type %d, index %d", msgs[0].Header.Type, binary.NativeEndian.Uint32(msgs[0].Data[4:8]))
			}
		})
	}
}

func FuzzConsumeAcks(f *testing.F) {
	f.Add(append(ack(1, 0), ack(2, unix.EEXIST)...), uint32(1), 2)
	f.Add([]byte{1, 2, 3}, uint32(0), 1)
	f.Fuzz(func(t *testing.T, dg []byte, first uint32, n int) {
		if n < 0 || n > 512 {
			return
		}
		answered := make([]bool, n)
		errs := make([]error, n)
		got, err := consumeAcks(dg, first, answered, errs)
		if err != nil {
			return
		}
		count := 0
		for i, a := range answered {
			if a {
				count++
			} else if errs[i] != nil {
				t.Fatalf("unanswered command %d has an error", i)
			}
		}
		if count != got {
			t.Fatalf("reported %d answers, marked %d", got, count)
		}
	})
}
