package dns

import (
	"testing"

	mdns "github.com/miekg/dns"
)

func TestUnderAgreesWithMiekg(t *testing.T) {
	names := []string{
		apex, "l4lb.thisdcos.directory.x.", "a." + apex, "b.a." + apex, "xl4lb.thisdcos.directory.",
		"thisdcos.directory.", ".", "a\\." + apex, "a\\\\." + apex, "l4lb\\.thisdcos.directory.",
		"_app2._tcp.dcos-101.marathon." + apex, "directory.",
	}
	for _, z := range []string{apex, "thisdcos.directory.", "."} {
		for _, n := range names {
			if got, want := under(z, n), mdns.IsSubDomain(z, n); got != want {
				t.Errorf("under(%q, %q) = %v, miekg says %v", z, n, got, want)
			}
		}
	}
}
