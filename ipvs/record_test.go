package ipvs

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadRecord: the public record reader never panics; what it accepts
// is written back by saveRecord and read again the same.
func FuzzReadRecord(f *testing.F) {
	for _, s := range []string{
		`{"services":[{"addr":"192.0.2.1","port":10000,"protocol":"tcp"}]}`,
		`{"services":[{"addr":"2001:db8::1","port":53,"protocol":"udp"},{"addr":"192.0.2.1","port":80,"protocol":"tcp"}]}`,
		`{"services":[]}`, `{}`, `[]`, `{"services":[{"addr":"x","port":0}]}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "public.json")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		rec, err := readRecord(path)
		if err != nil {
			return
		}
		r := &Reconciler{cfg: Config{PublicRecord: filepath.Join(dir, "again.json")}, pubRecord: rec}
		if err := r.saveRecord(); err != nil {
			t.Fatalf("save what was read: %v", err)
		}
		back, err := readRecord(r.cfg.PublicRecord)
		if err != nil || !maps.Equal(back, rec) {
			t.Fatalf("round trip of %q: %v, %v; want %v", data, back, err, rec)
		}
	})
}
