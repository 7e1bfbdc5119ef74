package genl

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// A real server as the kernel writes it carries its counters: they are
// read, 32-bit STATS when alone, STATS64 over it when both come.
func TestDecodeDestStats(t *testing.T) {
	d := Dest{Addr: netip.MustParseAddr("10.0.0.2"), Port: 80, Family: unix.AF_INET, Weight: 1}
	got, err := decodeDest(kernelDestPayload(d), unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stats.Conns != 7 || got.Stats.InBytes != 1234 {
		t.Fatalf("stats %+v, want conns 7, in bytes 1234", got.Stats)
	}
	wide := attr(attrDestStats64|unix.NLA_F_NESTED, cat(attr(1, native.AppendUint64(nil, 1<<40)), attr(11, nil), attr(10, native.AppendUint64(nil, 99))))
	nested := cat(attr(attrDestAddr, kernelAddr(d.Addr)), attr(attrDestFamily, u16b(d.Family)), wide, kernelStats())
	got, err = decodeDest(cat([]byte{byte(NewDest), genlVersion, 0, 0}, attr(attrCmdDest|unix.NLA_F_NESTED, nested)), unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stats.Conns != 1<<40 || got.Stats.OutBPS != 99 {
		t.Fatalf("stats %+v, want the 64-bit ones", got.Stats)
	}
	if _, err := decodeStats(attr(1, []byte{1, 2, 3})); err == nil {
		t.Fatal("a 3-byte counter decoded")
	}
}
