package gossip

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/vip"
)

// randomRegistration draws a registration with every field exercised:
// IPv4 and IPv6 (with zones), named and IP VIPs, zero and set times.
func randomRegistration(r *rand.Rand) vip.Registration {
	addr := func() netip.Addr {
		switch r.IntN(4) {
		case 0:
			return netip.Addr{}
		case 1:
			return netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		case 2:
			var b [16]byte
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			return netip.AddrFrom16(b)
		default:
			return netip.MustParseAddr("fe80::1").WithZone("eth" + string(rune('0'+r.IntN(10))))
		}
	}
	str := func() string {
		const alphabet = "abc/-.:xyzé"
		n := r.IntN(20)
		var sb strings.Builder
		for range n {
			sb.WriteRune([]rune(alphabet)[r.IntN(len([]rune(alphabet)))])
		}
		return sb.String()
	}
	reg := vip.Registration{
		VIP:         vip.Spec{Protocol: []vip.Protocol{vip.TCP, vip.UDP, ""}[r.IntN(3)], Name: str(), Addr: addr(), Port: uint16(r.IntN(65536))},
		Framework:   str(),
		Backend:     netip.AddrPortFrom(addr(), uint16(r.IntN(65536))),
		Weight:      r.Uint32(),
		Health:      []vip.Health{vip.Healthy, vip.Unhealthy, vip.Draining}[r.IntN(3)],
		Scheduler:   str(),
		Persistence: r.Uint32(),
		Claim:       vip.Claim{Addr: addr()},
	}
	if r.IntN(2) == 0 {
		reg.Claim.Since = time.Unix(r.Int64N(1<<40)-(1<<39), r.Int64N(1e9)).In(time.FixedZone("x", 3600))
	}
	return reg
}

func randomRecord(r *rand.Rand, node string) *record {
	n := r.IntN(8)
	regs := make([]vip.Registration, n)
	for i := range regs {
		regs[i] = randomRegistration(r)
	}
	return &record{
		Node:          node,
		Version:       Version{Generation: r.Uint64(), Seq: r.Uint64()},
		Registrations: normalizeRegistrations(regs),
	}
}

// Property: every record, notice, pull and state survives a round trip.
func TestCodecRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		rec := randomRecord(r, "node-"+string(rune('a'+i%26)))
		m, err := decodeMessage(encodeRecord(rec), MaxMessageBytes)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !reflect.DeepEqual(m.Record, rec) {
			t.Fatalf("record %d changed in a round trip:\n got %+v\nwant %+v", i, m.Record, rec)
		}
	}
	leaving := &record{Node: "n", Version: Version{3, 4}, Leaving: true}
	if m, err := decodeMessage(encodeRecord(leaving), MaxMessageBytes); err != nil || !reflect.DeepEqual(m.Record, leaving) {
		t.Fatalf("leaving record: %v %+v", err, m)
	}
	if m, err := decodeMessage(encodeNotice("n", Version{7, 9}), MaxMessageBytes); err != nil || m.Kind != kindNotice || m.Node != "n" || m.Version != (Version{7, 9}) {
		t.Fatalf("notice: %v %+v", err, m)
	}
	if m, err := decodeMessage(encodePull("a", "b"), MaxMessageBytes); err != nil || m.Kind != kindPull || m.Requester != "a" || m.Node != "b" {
		t.Fatalf("pull: %v %+v", err, m)
	}
	recs := []*record{randomRecord(r, "x"), randomRecord(r, "y"), leaving}
	m, err := decodeMessage(encodeState(recs), MaxStateBytes)
	if err != nil || !reflect.DeepEqual(m.Records, recs) {
		t.Fatalf("state: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := encodeRecord(&record{Node: "n", Version: Version{1, 1}, Registrations: []vip.Registration{reg("/a", 80, "10.0.0.1:80")}})
	big := make([]byte, MaxMessageBytes+1)
	big[0], big[1] = formatVersion, byte(kindRecord)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		buf  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"one byte", []byte{formatVersion}, ErrMalformed},
		{"unknown format version", mutate(func(b []byte) []byte { b[0] = 9; return b }), ErrMalformed},
		{"unknown kind", mutate(func(b []byte) []byte { b[1] = 99; return b }), ErrMalformed},
		{"state kind outside push/pull is still decodable only as state", encodeState(nil), nil},
		{"truncated", good[:len(good)-3], ErrMalformed},
		{"trailing bytes", append(append([]byte(nil), good...), 0), ErrMalformed},
		{"oversized", big, ErrOversized},
		{"count larger than the buffer", []byte{formatVersion, byte(kindRecord), 1, 'n', 1, 1, 0, 0xff, 0xff, 0x03}, ErrMalformed},
		{"state count larger than the buffer", []byte{formatVersion, byte(kindState), 0xff, 0xff, 0x03}, ErrMalformed},
		{"unknown flags", []byte{formatVersion, byte(kindRecord), 1, 'n', 1, 1, 2, 0}, ErrMalformed},
		{"leaving with registrations", mutate(func(b []byte) []byte { b[6] = 1; return b }), ErrMalformed},
		{"empty node name", []byte{formatVersion, byte(kindRecord), 0, 1, 1, 0, 0}, ErrMalformed},
		{"string over cap", append([]byte{formatVersion, byte(kindNotice), 0x81, 0x08}, make([]byte, 1025)...), ErrMalformed},
		{"pull without requester", []byte{formatVersion, byte(kindPull), 0, 1, 'n'}, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeMessage(tc.buf, MaxMessageBytes)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzDecodeMessage feeds the decoder arbitrary bytes: it must never panic,
// and whatever it accepts must encode back to something that decodes to
// the same message.
func FuzzDecodeMessage(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	f.Add(encodeRecord(randomRecord(r, "seed")))
	f.Add(encodeRecord(&record{Node: "l", Version: Version{1, 2}, Leaving: true}))
	f.Add(encodeNotice("n", Version{1, 2}))
	f.Add(encodePull("a", "b"))
	f.Add(encodeState([]*record{randomRecord(r, "a"), randomRecord(r, "b")}))
	f.Add([]byte{formatVersion, byte(kindRecord), 1, 'n', 1, 1, 0, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b, MaxStateBytes)
		if err != nil {
			return
		}
		var again []byte
		switch m.Kind {
		case kindRecord:
			again = encodeRecord(m.Record)
		case kindNotice:
			again = encodeNotice(m.Node, m.Version)
		case kindPull:
			again = encodePull(m.Requester, m.Node)
		case kindState:
			again = encodeState(m.Records)
		default:
			t.Fatalf("decoded unknown kind %v", m.Kind)
		}
		m2, err := decodeMessage(again, MaxStateBytes)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
	})
}
