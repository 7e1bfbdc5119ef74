package scenario

import (
	"reflect"
	"testing"
)

// Output of nft 1.0.6 (`nft -j list map inet l4lb slots-...`) on this host.
const (
	slots4 = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"map": {"family": "inet", "name": "slots-tcp-11.0.0.1-80", "table": "l4lb", "type": "mark", "handle": 1, "map": "ipv4_addr . inet_service", "elem": [[0, {"concat": ["10.200.0.2", 8080]}], [1, {"concat": ["10.200.0.3", 8080]}], [2, {"concat": ["10.200.0.3", 8080]}]]}}]}`
	slots6 = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"map": {"family": "inet", "name": "slots-tcp-fd01_c__1-80", "table": "l4lb", "type": "mark", "handle": 2, "map": "ipv6_addr . inet_service", "elem": [[0, {"concat": ["fd00:200::2", 8080]}]]}}]}`
	empty  = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"map": {"family": "inet", "name": "slots-tcp-11.0.0.1-80", "table": "l4lb", "type": "mark", "handle": 1, "map": "ipv4_addr . inet_service"}}]}`
)

func TestParseSlots(t *testing.T) {
	for _, c := range []struct {
		name, raw string
		want      map[string]int
		err       bool
	}{
		{"IPv4, a backend with two slots", slots4, map[string]int{"10.200.0.2:8080": 1, "10.200.0.3:8080": 2}, false},
		{"IPv6 backend in brackets, as ipvsadm writes it", slots6, map[string]int{"[fd00:200::2]:8080": 1}, false},
		{"no slots: every backend drained", empty, map[string]int{}, false},
		{"not JSON", "Error: No such file or directory", nil, true},
		{"element without a backend", `{"nftables": [{"map": {"elem": [[0]]}}]}`, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseSlots(c.raw)
			if (err != nil) != c.err {
				t.Fatalf("parseSlots: error %v, want error %v", err, c.err)
			}
			if !c.err && !reflect.DeepEqual(got, c.want) {
				t.Errorf("parseSlots = %v, want %v", got, c.want)
			}
		})
	}
}

func FuzzParseSlots(f *testing.F) {
	for _, s := range []string{slots4, slots6, empty, `{"nftables": [{"map": {"elem": [[0, {"concat": [1, "x"]}]]}}]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := parseSlots(raw)
		if err != nil {
			return
		}
		for addr, n := range got {
			if n < 1 {
				t.Errorf("backend %s with %d slots", addr, n)
			}
		}
	})
}
