package dns

import (
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzServeDNS feeds raw bytes to the query path as the server would: the
// UDP read loop's prepared-answer path first, then unpacking and the
// handler. Nothing may panic; every reply must unpack and carry the query's
// ID; a prepared answer must match what the handler says for the same
// message.
//
//	go test ./dns -run '^$' -fuzz FuzzServeDNS -fuzztime 60s
func FuzzServeDNS(f *testing.F) {
	seeds := []*mdns.Msg{
		question(app2, mdns.TypeA),
		question(app2Flat, mdns.TypeA),
		withEDNS(question("web.marathon."+apex, mdns.TypeAAAA), 4096, true),
		withEDNS(question("_app2._tcp.dcos-101.marathon."+apex, mdns.TypeSRV), 1232, false),
		question("nope."+apex, mdns.TypeA),
		question(apex, mdns.TypeSOA),
		question(apex, mdns.TypeNS),
		question(apex, mdns.TypeANY),
		question("app2.dcos-101.marathon.dclb.thisdcos.global.", mdns.TypeA),
		question("example.com.", mdns.TypeA),
		question("_big._tcp.marathon."+apex, mdns.TypeSRV),
	}
	cookie := withEDNS(question(app2, mdns.TypeA), 1232, false)
	cookie.IsEdns0().Option = append(cookie.IsEdns0().Option, &mdns.EDNS0_COOKIE{Code: mdns.EDNS0COOKIE, Cookie: "0102030405060708"})
	seeds = append(seeds, cookie)
	for _, m := range seeds {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1})

	tab := baseTable()
	tab.VIPs = append(tab.VIPs, manyPorts(40).VIPs...)
	s := newTestServer(f, Config{Forward: false}, tab)
	z := s.zone.Load()

	f.Fuzz(func(t *testing.T, data []byte) {
		var q query
		var key [256]byte
		rot := z.rotation.Load()
		var prepared []byte
		if parseQuery(data, &q, key[:]) {
			if out, ok := z.fastReply(nil, &q); ok {
				prepared = out
				pm := new(mdns.Msg)
				if err := pm.Unpack(out); err != nil {
					t.Fatalf("prepared reply does not unpack: %v", err)
				}
				if pm.Id != q.id {
					t.Fatalf("prepared reply ID %d, want %d", pm.Id, q.id)
				}
			}
		}
		m := new(mdns.Msg)
		if err := m.Unpack(data); err != nil {
			if prepared != nil {
				t.Fatalf("prepared an answer to a query miekg cannot unpack: %v", err)
			}
			return // the server answers FORMERR or drops it before the handler
		}
		z.rotation.Store(rot)
		rec := newRecorder(false)
		s.ServeDNS(rec, m)
		for _, w := range rec.wire {
			r := new(mdns.Msg)
			if err := r.Unpack(w); err != nil {
				t.Fatalf("reply does not unpack: %v", err)
			}
			if r.Id != m.Id {
				t.Fatalf("reply ID %d, want %d", r.Id, m.Id)
			}
		}
		if prepared != nil {
			if len(rec.wire) != 1 {
				t.Fatalf("handler wrote %d replies to a query with a prepared answer", len(rec.wire))
			}
			hm, pm := new(mdns.Msg), new(mdns.Msg)
			_ = hm.Unpack(rec.wire[0])
			_ = pm.Unpack(prepared)
			if a, b := normalise(hm), normalise(pm); a != b {
				t.Fatalf("prepared and handler answers differ:\n%s\n%s", b, a)
			}
		}
	})
}
