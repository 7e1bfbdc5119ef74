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
		Public:      r.IntN(2) == 0,
		PublicPort:  uint16(r.IntN(65536)),
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
		Version:       Version{Generation: r.Uint64(), Seq: 1 + r.Uint64N(1<<62)},
		Registrations: dedupeByKey(normalizeRegistrations(regs)),
	}
}

// randomDelta draws a delta with removed keys and set registrations.
func randomDelta(r *rand.Rand, node string) *deltaMsg {
	d := fullDelta(randomRecord(r, node), uint8(r.IntN(maxLayout+1)))
	if r.IntN(2) == 0 {
		d.Base = 1 + r.Uint64N(d.Seq)
		if d.Base >= d.Seq {
			d.Base = d.Seq - 1
		}
		seen := map[vip.RegKey]bool{}
		for _, x := range d.Set {
			seen[x.Key()] = true
		}
		for range r.IntN(5) {
			x := normalizeRegistration(randomRegistration(r))
			k := x.Key()
			if !seen[k] {
				seen[k] = true
				d.Removed = append(d.Removed, k)
			}
		}
	}
	return d
}

// randomPages draws a pull reply whose registrations sit in their pages.
func randomPages(r *rand.Rand, node string) *pagesMsg {
	rec := randomRecord(r, node)
	layout := uint8(r.IntN(4))
	p := &pagesMsg{Node: node, Gen: rec.Version.Generation, Seq: rec.Version.Seq, Layout: layout, Full: r.IntN(2) == 0, Sum: r.Uint64()}
	if !p.Full {
		p.Base = r.Uint64N(p.Seq + 1)
	}
	byPage := map[int][]vip.Registration{}
	for _, x := range rec.Registrations {
		i := pageOf(keyHashOf(x.Key()), layout)
		byPage[i] = append(byPage[i], x)
	}
	for i := range 1 << layout {
		if regs, ok := byPage[i]; ok || r.IntN(3) == 0 {
			p.Pages = append(p.Pages, pageMsg{Index: uint32(i), Seq: r.Uint64N(p.Seq + 1), Regs: regs})
		}
	}
	return p
}

// Property: every delta, notice, pull, digest and pages message survives a
// round trip.
func TestCodecRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		d := randomDelta(r, "node-"+string(rune('a'+i%26)))
		m, err := decodeMessage(encodeDelta(d), MaxMessageBytes)
		if err != nil {
			t.Fatalf("delta %d: %v", i, err)
		}
		if !reflect.DeepEqual(m.Delta, d) {
			t.Fatalf("delta %d changed in a round trip:\n got %+v\nwant %+v", i, m.Delta, d)
		}
		p := randomPages(r, "node-x")
		m, err = decodeMessage(encodePages(p), MaxStreamBytes)
		if err != nil {
			t.Fatalf("pages %d: %v", i, err)
		}
		if !reflect.DeepEqual(m.Pages, p) {
			t.Fatalf("pages %d changed in a round trip:\n got %+v\nwant %+v", i, m.Pages, p)
		}
	}
	leaving := &deltaMsg{Node: "n", Gen: 3, Seq: 4, Leaving: true}
	if m, err := decodeMessage(encodeDelta(leaving), MaxMessageBytes); err != nil || !reflect.DeepEqual(m.Delta, leaving) {
		t.Fatalf("leaving delta: %v %+v", err, m)
	}
	if m, err := decodeMessage(encodeNotice("n", Version{7, 9}), MaxMessageBytes); err != nil || m.Kind != kindNotice || m.Node != "n" || m.Version != (Version{7, 9}) {
		t.Fatalf("notice: %v %+v", err, m)
	}
	if m, err := decodeMessage(encodePull("a", "b", Version{5, 6}, 3), MaxMessageBytes); err != nil || m.Kind != kindPull ||
		m.Requester != "a" || m.Node != "b" || m.Version != (Version{5, 6}) || m.Layout != 3 {
		t.Fatalf("pull: %v %+v", err, m)
	}
	dg := []digestEntry{{Node: "x", Version: Version{1, 2}, Sum: 77}, {Node: "y", Version: Version{3, 4}, Leaving: true},
		{Node: "z", Version: Version{5, 6}, Sum: 8, Whole: true, Layout: 2, Regs: randomRecord(r, "z").Registrations}}
	m, err := decodeMessage(encodeDigest(dg), MaxStateBytes)
	if err != nil || !reflect.DeepEqual(m.Digest, dg) {
		t.Fatalf("digest: %v %+v", err, m)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := encodeDelta(fullDelta(&record{Node: "n", Version: Version{1, 1}, Registrations: []vip.Registration{reg("/a", 80, "10.0.0.1:80")}}, 0))
	big := make([]byte, MaxMessageBytes+1)
	big[0], big[1] = formatVersion, byte(kindDelta)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	// Header of a delta from node "n": name, generation 1, base 0, seq 1.
	hdr := []byte{formatVersion, byte(kindDelta), 1, 'n', 1, 0, 1}
	withHdr := func(rest ...byte) []byte { return append(append([]byte(nil), hdr...), rest...) }
	sum0 := []byte{0, 0, 0, 0, 0, 0, 0, 0}
	r := reg("/a", 80, "10.0.0.1:80")
	twice := &deltaMsg{Node: "n", Gen: 1, Base: 1, Seq: 2, Removed: []vip.RegKey{r.Key(), r.Key()}}
	wrongPage := &pagesMsg{Node: "n", Gen: 1, Seq: 1, Layout: 1, Full: true}
	wrongPage.Pages = []pageMsg{{Index: uint32(1 - pageOf(keyHashOf(r.Key()), 1)), Seq: 1, Regs: []vip.Registration{r}}}
	cases := []struct {
		name string
		buf  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"one byte", []byte{formatVersion}, ErrMalformed},
		{"unknown format version", mutate(func(b []byte) []byte { b[0] = 1; return b }), ErrMalformed},
		{"unknown kind", mutate(func(b []byte) []byte { b[1] = 99; return b }), ErrMalformed},
		{"digest decodes (only push/pull accepts it)", encodeDigest(nil), nil},
		{"truncated", good[:len(good)-3], ErrMalformed},
		{"trailing bytes", append(append([]byte(nil), good...), 0), ErrMalformed},
		{"oversized", big, ErrOversized},
		{"count larger than the buffer", withHdr(append(append([]byte{0, 0}, sum0...), 0, 0xff, 0xff, 0x03)...), ErrMalformed},
		{"digest count larger than the buffer", []byte{formatVersion, byte(kindDigest), 0xff, 0xff, 0x03}, ErrMalformed},
		{"unknown flags", withHdr(append(append([]byte{0, 4}, sum0...), 0, 0)...), ErrMalformed},
		{"restarting delta decodes", withHdr(append(append([]byte{0, 2}, sum0...), 0, 0)...), nil},
		{"delta leaving and restarting", withHdr(append(append([]byte{0, 3}, sum0...), 0, 0)...), ErrMalformed},
		{"pages leaving and restarting", encodePages(&pagesMsg{Node: "n", Gen: 1, Seq: 1, Full: true, Leaving: true, Restarting: true}), ErrMalformed},
		{"pages unknown flags", []byte{formatVersion, byte(kindPages), 1, 'n', 1, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrMalformed},
		{"restarting pages decode", []byte{formatVersion, byte(kindPages), 1, 'n', 1, 0, 1, 0, 4 | 2, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil},
		{"layout too large", withHdr(append(append([]byte{maxLayout + 1, 0}, sum0...), 0, 0)...), ErrMalformed},
		{"base not below seq", []byte{formatVersion, byte(kindDelta), 1, 'n', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrMalformed},
		{"leaving with registrations", encodeDelta(&deltaMsg{Node: "n", Gen: 1, Seq: 1, Leaving: true, Set: []vip.Registration{r}}), ErrMalformed},
		{"whole delta with removed keys", encodeDelta(&deltaMsg{Node: "n", Gen: 1, Seq: 1, Removed: []vip.RegKey{r.Key()}}), ErrMalformed},
		{"key twice", encodeDelta(twice), ErrMalformed},
		{"registration in the wrong page", encodePages(wrongPage), ErrMalformed},
		{"pages out of order", encodePages(&pagesMsg{Node: "n", Gen: 1, Seq: 1, Layout: 2, Pages: []pageMsg{{Index: 2}, {Index: 1}}}), ErrMalformed},
		{"page outside the layout", encodePages(&pagesMsg{Node: "n", Gen: 1, Seq: 1, Layout: 1, Pages: []pageMsg{{Index: 2}}}), ErrMalformed},
		{"page newer than the record", encodePages(&pagesMsg{Node: "n", Gen: 1, Seq: 1, Layout: 1, Pages: []pageMsg{{Index: 0, Seq: 2}}}), ErrMalformed},
		{"empty node name", []byte{formatVersion, byte(kindDelta), 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrMalformed},
		{"string over cap", append([]byte{formatVersion, byte(kindNotice), 0x81, 0x08}, make([]byte, 1025)...), ErrMalformed},
		{"pull without requester", []byte{formatVersion, byte(kindPull), 0, 1, 'n', 0, 0, 0}, ErrMalformed},
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
	f.Add(encodeDelta(randomDelta(r, "seed")))
	f.Add(encodeDelta(randomDelta(r, "seed2")))
	f.Add(encodeDelta(&deltaMsg{Node: "l", Gen: 1, Seq: 2, Leaving: true}))
	restarting := randomDelta(r, "restarting")
	restarting.Restarting = true
	f.Add(encodeDelta(restarting))
	f.Add(encodeDelta(&deltaMsg{Node: "r", Gen: 1, Base: 1, Seq: 2, Restarting: true, Sum: 9}))
	restartingPages := randomPages(r, "rp")
	restartingPages.Restarting = true
	f.Add(encodePages(restartingPages))
	f.Add(encodeNotice("n", Version{1, 2}))
	f.Add(encodePull("a", "b", Version{1, 2}, 3))
	f.Add(encodeDigest([]digestEntry{{Node: "a", Version: Version{1, 2}, Sum: 3}, {Node: "b", Leaving: true},
		{Node: "c", Version: Version{1, 2}, Whole: true, Layout: 1, Regs: randomRecord(r, "c").Registrations}}))
	f.Add(encodePages(randomPages(r, "p")))
	f.Add([]byte{formatVersion, byte(kindDigest), 0xff, 0xff, 0x03})
	for _, p := range encodeApplied("a", 1, 2, map[string]Version{"a": {1, 2}, "b": {3, 4}},
		[]Drain{{Service: vip.ServiceKey{Addr: netip.MustParseAddr("11.0.0.1"), Port: 80, Protocol: vip.TCP}, Backend: netip.MustParseAddrPort("10.0.0.2:8080"), Active: 3, Inactive: 9}}, 60) {
		f.Add(p)
	}
	f.Add(encodeAppliedQuery("asker"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b, MaxStreamBytes)
		if err != nil {
			return
		}
		var again []byte
		switch m.Kind {
		case kindDelta:
			again = encodeDelta(m.Delta)
		case kindNotice:
			again = encodeNotice(m.Node, m.Version)
		case kindPull:
			again = encodePull(m.Requester, m.Node, m.Version, m.Layout)
		case kindDigest:
			again = encodeDigest(m.Digest)
		case kindPages:
			again = encodePages(m.Pages)
		case kindApplied:
			again = encodeAppliedPart(m.Applied)
		case kindAppliedQuery:
			again = encodeAppliedQuery(m.Requester)
		default:
			t.Fatalf("decoded unknown kind %v", m.Kind)
		}
		m2, err := decodeMessage(again, MaxStreamBytes)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
	})
}
