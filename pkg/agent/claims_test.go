package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l4lb/l4lb/vip"
)

func testClaim(i int) (vip.NameKey, vip.Claim) {
	k := vip.NameKey{Framework: "marathon", Name: fmt.Sprintf("/app%d", i), V6: i%2 == 1}
	a := netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
	if k.V6 {
		a = netip.AddrFrom16([16]byte{0xfd, 1, 0, 0xc, 14: byte(i >> 8), 15: byte(i)})
	}
	return k, vip.Claim{Addr: a, Since: time.Unix(int64(1000+i), 0).UTC()}
}

func openBook(t testing.TB, path string) *ClaimBook {
	t.Helper()
	b := NewClaimBook(path)
	if err := b.Load(); err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func sameClaims(t *testing.T, b *ClaimBook, want map[vip.NameKey]vip.Claim) {
	t.Helper()
	if b.Len() != len(want) {
		t.Errorf("book holds %d claims, want %d", b.Len(), len(want))
	}
	for k, c := range want {
		if got, ok := b.Get(k); !ok || got.Addr != c.Addr || !got.Since.Equal(c.Since) {
			t.Errorf("Get(%v) = %+v %v, want %+v", k, got, ok, c)
		}
	}
}

func TestClaimBookPutManyIsOneWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "claims.json")
	b := openBook(t, path)
	batch := map[vip.NameKey]vip.Claim{}
	for i := range 100 {
		k, c := testClaim(i)
		batch[k] = c
	}
	before := b.Stats()
	if err := b.PutMany(batch); err != nil {
		t.Fatal(err)
	}
	after := b.Stats()
	if after.Batches-before.Batches != 1 || after.Syncs-before.Syncs != 1 {
		t.Errorf("PutMany of 100 claims took %d writes and %d fsyncs, want 1 and 1", after.Batches-before.Batches, after.Syncs-before.Syncs)
	}
	// Unchanged claims write nothing.
	if err := b.PutMany(batch); err != nil || b.Stats().Batches != after.Batches {
		t.Errorf("PutMany of the same claims: %v, %d writes", err, b.Stats().Batches-after.Batches)
	}
	forget := map[vip.NameKey]bool{}
	for k := range batch {
		if k.V6 {
			forget[k] = true
			delete(batch, k)
		}
	}
	forget[vip.NameKey{Framework: "marathon", Name: "/never"}] = true
	if err := b.Forget(forget); err != nil {
		t.Fatal(err)
	}
	if got := b.Stats().Batches - after.Batches; got != 1 {
		t.Errorf("Forget of 50 claims took %d writes, want 1", got)
	}
	sameClaims(t, b, batch)
	_ = b.Close()
	sameClaims(t, openBook(t, path), batch)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("claims.json written (stat: %v); the journal is %s", err, b.JournalPath())
	}
}

func TestClaimBookMigratesClaimsJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "claims.json")
	want := map[vip.NameKey]vip.Claim{}
	var recs []claimRecord
	for i := range 3 {
		k, c := testClaim(i)
		want[k] = c
		recs = append(recs, claimRecord{k, c})
	}
	// The file as the ClaimBook before the journal wrote it.
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"Framework"`, `"Name"`, `"V6"`, `"Addr"`, `"Since"`} {
		if !strings.Contains(string(data), field) {
			t.Fatalf("old format lacks %s: %s", field, data)
		}
	}
	b := openBook(t, path)
	sameClaims(t, b, want)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("claims.json still there after migration (stat: %v)", err)
	}
	if kept, _ := os.ReadFile(path + ".migrated"); string(kept) != string(data) {
		t.Error("claims.json.migrated does not hold the old file")
	}
	_ = b.Close()
	sameClaims(t, openBook(t, path), want)

	// A corrupt claims.json stops Load, as before, and nothing is written.
	other := t.TempDir()
	bad := filepath.Join(other, "claims.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := NewClaimBook(bad).Load(); err == nil {
		t.Error("a corrupt claims.json loaded without error")
	}
	if entries, _ := os.ReadDir(other); len(entries) != 1 {
		t.Errorf("files after a refused Load: %v", entries)
	}
}

func TestClaimBookWithoutLoadLoadsOnFirstChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "claims.json")
	k0, c0 := testClaim(0)
	k1, c1 := testClaim(1)
	first := openBook(t, path)
	if err := first.Put(k0, c0); err != nil {
		t.Fatal(err)
	}
	_ = first.Close()
	b := NewClaimBook(path)
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Put(k1, c1); err != nil {
		t.Fatal(err)
	}
	sameClaims(t, b, map[vip.NameKey]vip.Claim{k0: c0, k1: c1})
}

func TestClaimBookInMemory(t *testing.T) {
	b := NewClaimBook("")
	k, c := testClaim(7)
	if err := b.PutMany(map[vip.NameKey]vip.Claim{k: c}); err != nil {
		t.Fatal(err)
	}
	sameClaims(t, b, map[vip.NameKey]vip.Claim{k: c})
	if err := b.Forget(map[vip.NameKey]bool{k: true}); err != nil || b.Len() != 0 {
		t.Errorf("Forget: %v, %d left", err, b.Len())
	}
	if b.JournalPath() != "" || b.Close() != nil {
		t.Error("an in-memory book has a journal")
	}
}

func TestClaimBookConcurrentWritersAgreeWithTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "claims.json")
	b := openBook(t, path)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				k, c := testClaim(i % 10)
				c.Since = c.Since.Add(time.Duration(w*100+i) * time.Second)
				if i%3 == 2 {
					if err := b.Forget(map[vip.NameKey]bool{k: true}); err != nil {
						t.Error(err)
					}
				} else if err := b.PutMany(map[vip.NameKey]vip.Claim{k: c}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	want := map[vip.NameKey]vip.Claim{}
	for i := range 10 {
		k, _ := testClaim(i)
		if c, ok := b.Get(k); ok {
			want[k] = c
		}
	}
	_ = b.Close()
	sameClaims(t, openBook(t, path), want)
}

// BenchmarkClaimBookPutMany writes batches of 100 new claims into a book
// that holds 10,000.
func BenchmarkClaimBookPutMany(b *testing.B) {
	book := openBook(b, filepath.Join(b.TempDir(), "claims.json"))
	fill := map[vip.NameKey]vip.Claim{}
	for i := range 10000 {
		k, c := testClaim(i)
		fill[k] = c
	}
	if err := book.PutMany(fill); err != nil {
		b.Fatal(err)
	}
	syncs := book.Stats().Syncs
	n := 10000
	for b.Loop() {
		batch := make(map[vip.NameKey]vip.Claim, 100)
		for range 100 {
			k, c := testClaim(n)
			batch[k] = c
			n++
		}
		if err := book.PutMany(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(book.Stats().Syncs-syncs)/float64((n-10000)/100), "fsyncs/op")
}
