package genl

import "fmt"

// Stats are a service's or real server's counters and the kernel's rate
// estimates (IPVS_STATS_ATTR_*), read from IPVS_*_ATTR_STATS64 when the
// kernel sends it, else from the 32-bit IPVS_*_ATTR_STATS. The rates are
// the kernel estimator's smoothed values: per second, bytes per second.
type Stats struct {
	Conns, InPkts, OutPkts, InBytes, OutBytes uint64
	CPS, InPPS, OutPPS, InBPS, OutBPS         uint64
}

const (
	attrDestStats   = 10 // IPVS_DEST_ATTR_STATS
	attrDestStats64 = 12 // IPVS_DEST_ATTR_STATS64
)

// decodeStats decodes a nested stats attribute; each counter is 4 or 8
// bytes, as the kernel sends it.
func decodeStats(nest []byte) (Stats, error) {
	var s Stats
	err := forEachAttr(nest, func(typ uint16, v []byte) error {
		var n uint64
		switch len(v) {
		case 4:
			n = uint64(native.Uint32(v))
		case 8:
			n = native.Uint64(v)
		default:
			if typ == 11 { // IPVS_STATS_ATTR_PAD
				return nil
			}
			return fmt.Errorf("stats attribute %d: %d bytes", typ, len(v))
		}
		switch typ {
		case 1:
			s.Conns = n
		case 2:
			s.InPkts = n
		case 3:
			s.OutPkts = n
		case 4:
			s.InBytes = n
		case 5:
			s.OutBytes = n
		case 6:
			s.CPS = n
		case 7:
			s.InPPS = n
		case 8:
			s.OutPPS = n
		case 9:
			s.InBPS = n
		case 10:
			s.OutBPS = n
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("stats: %w", err)
	}
	return s, nil
}
