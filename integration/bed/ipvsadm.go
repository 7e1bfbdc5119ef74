package bed

import (
	"fmt"
	"strconv"
	"strings"
)

// IPVSService is one virtual service as `ipvsadm -Ln` prints it.
type IPVSService struct {
	Protocol  string // "TCP", "UDP"
	Address   string // "11.0.0.1:8080", "[fd01:c::1]:80"
	Scheduler string
	Flags     string // the rest of the line: "persistent 300", ...
	Real      []IPVSReal
}

// IPVSReal is one real server line of `ipvsadm -Ln`.
type IPVSReal struct {
	Address    string
	Forward    string // "Masq", "Route", "Tunnel", "Local"
	Weight     int
	ActiveConn int
	InActConn  int
}

// IPVSTable runs the real `ipvsadm -Ln` in the namespace and parses it, so
// tests check what an operator would see.
func (n *Netns) IPVSTable(t T) []IPVSService {
	t.Helper()
	out := n.MustRun(t, "ipvsadm", "-Ln")
	svcs, err := ParseIPVSAdm(out)
	if err != nil {
		t.Fatalf("parse ipvsadm -Ln in %s: %v\n%s", n.Name, err, out)
	}
	return svcs
}

// ParseIPVSAdm parses the output of `ipvsadm -Ln`.
func ParseIPVSAdm(out string) ([]IPVSService, error) {
	var svcs []IPVSService
	for i, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0, strings.HasPrefix(line, "IP Virtual Server"), strings.HasPrefix(line, "Prot "), len(f) > 1 && f[1] == "RemoteAddress:Port":
			continue
		case f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP" || f[0] == "FWM":
			if len(f) < 3 {
				return nil, fmt.Errorf("line %d: short service line %q", i+1, line)
			}
			svcs = append(svcs, IPVSService{Protocol: f[0], Address: f[1], Scheduler: f[2], Flags: strings.Join(f[3:], " ")})
		case f[0] == "->":
			if len(svcs) == 0 || len(f) < 6 {
				return nil, fmt.Errorf("line %d: real server line %q outside a service", i+1, line)
			}
			var nums [3]int
			for j := range nums {
				v, err := strconv.Atoi(f[3+j])
				if err != nil {
					return nil, fmt.Errorf("line %d: %q: %w", i+1, line, err)
				}
				nums[j] = v
			}
			s := &svcs[len(svcs)-1]
			s.Real = append(s.Real, IPVSReal{Address: f[1], Forward: f[2], Weight: nums[0], ActiveConn: nums[1], InActConn: nums[2]})
		default:
			return nil, fmt.Errorf("line %d: unexpected %q", i+1, line)
		}
	}
	return svcs, nil
}
