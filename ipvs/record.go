package ipvs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"slices"

	"github.com/l4lb/l4lb/pkg/atomicfile"
	"github.com/l4lb/l4lb/vip"
)

// The public record (Config.PublicRecord) lists the virtual services l4lb
// created at public addresses. Those addresses are the node's own, where an
// operator may run IPVS services of their own, so the dummy interface
// cannot say which are l4lb's: the record does. A key enters it before its
// service is added and leaves it after the service is gone, so that the
// record always covers what l4lb holds there, across a crash too.

// recordFile is the record's JSON form.
type recordFile struct {
	Services []recordEntry `json:"services"`
}

type recordEntry struct {
	Addr     netip.Addr   `json:"addr"`
	Port     uint16       `json:"port"`
	Protocol vip.Protocol `json:"protocol"`
}

// readRecord reads the record at path; a missing file (or no path) is an
// empty record.
func readRecord(path string) (map[vip.ServiceKey]bool, error) {
	rec := map[vip.ServiceKey]bool{}
	if path == "" {
		return rec, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return nil, fmt.Errorf("public services record: %w", err)
	}
	var f recordFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("public services record %s: %w", path, err)
	}
	for _, e := range f.Services {
		if !e.Addr.IsValid() || e.Port == 0 || (e.Protocol != vip.TCP && e.Protocol != vip.UDP) {
			return nil, fmt.Errorf("public services record %s: bad entry %+v", path, e)
		}
		rec[vip.ServiceKey{Addr: e.Addr, Port: e.Port, Protocol: e.Protocol}] = true
	}
	return rec, nil
}

// saveRecord writes r.record to Config.PublicRecord.
func (r *Reconciler) saveRecord() error {
	if r.cfg.PublicRecord == "" {
		return nil
	}
	keys := slices.SortedFunc(maps.Keys(r.pubRecord), vip.CompareServiceKeys)
	f := recordFile{Services: make([]recordEntry, 0, len(keys))}
	for _, k := range keys {
		f.Services = append(f.Services, recordEntry{Addr: k.Addr, Port: k.Port, Protocol: k.Protocol})
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(r.cfg.PublicRecord, append(b, '\n'), nil); err != nil {
		return fmt.Errorf("public services record: %w", err)
	}
	return nil
}

// recordAdds enters in the record, and saves, the public services that ops
// add.
func (r *Reconciler) recordAdds(ops []Op) error {
	added := false
	for _, op := range ops {
		if op.Kind == AddService && r.pub.IsPublic(op.Service.Addr) && !r.pubRecord[op.Service.ServiceKey] {
			r.pubRecord[op.Service.ServiceKey] = true
			added = true
		}
	}
	if !added {
		return nil
	}
	return r.saveRecord()
}

// recordDeletes drops from the record, and saves, the services the kernel
// no longer holds (as far as l4lb knows).
func (r *Reconciler) recordDeletes() error {
	gone := false
	for k := range r.pubRecord {
		if r.applied[k] == nil {
			delete(r.pubRecord, k)
			gone = true
		}
	}
	if !gone {
		return nil
	}
	return r.saveRecord()
}

// nodeAddr reports whether a is one of the node's own addresses that public
// services are at: a public address, or the address of a recorded public
// service (the node may have stopped publishing on it). Such an address is
// never put on the dummy interface.
func (r *Reconciler) nodeAddr(a netip.Addr) bool {
	if r.pub.IsPublic(a) {
		return true
	}
	for k := range r.pubRecord {
		if k.Addr == a {
			return true
		}
	}
	return false
}
