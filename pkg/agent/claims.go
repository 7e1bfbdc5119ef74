package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/l4lb/l4lb/pkg/journal"
	"github.com/l4lb/l4lb/vip"
)

// Names of the claims journal and what it holds.
const (
	claimsJournalKind    = "l4lb claims"
	claimsJournalVersion = 1
)

// ClaimBook keeps the address claims this node published, in a journal
// under the state directory, so that after a restart the node claims the
// same addresses (and so keeps its VIPs' addresses even when it alone holds
// their backends). A change is durable before the method that makes it
// returns; a batch (PutMany, Forget) is one write and one fsync, and
// concurrent writers share theirs. An empty path keeps the claims in memory
// only. Its methods are safe for concurrent use.
type ClaimBook struct {
	path string // the claims.json of earlier versions; the journal is beside it

	// openMu serialises opening the journal and guards opened.
	openMu sync.Mutex
	opened bool

	// mu guards claims and j. claims mirrors the journal in log order.
	mu     sync.Mutex
	claims map[vip.NameKey]vip.Claim
	j      *journal.Journal
}

// claimRecord is one claim as the journal (and the old claims.json, a JSON
// array of them) holds it: {"Framework","Name","V6","Addr","Since"}.
type claimRecord struct {
	vip.NameKey
	vip.Claim
}

// NewClaimBook returns a book kept beside path ("" for memory only): path
// is the claims.json of earlier versions, and the journal is path with
// ".journal" for ".json". Load reads what a previous run left; the first
// change loads it too if Load was not called.
func NewClaimBook(path string) *ClaimBook {
	return &ClaimBook{path: path, claims: map[vip.NameKey]vip.Claim{}}
}

// JournalPath returns the path of the book's journal ("" in memory).
func (b *ClaimBook) JournalPath() string {
	if b.path == "" {
		return ""
	}
	return strings.TrimSuffix(b.path, ".json") + ".journal"
}

// Load opens the book's journal and reads it. A claims.json left by an
// earlier l4lb is migrated into it (its claims replace those with the same
// key) and renamed to claims.json.migrated. A missing file is an empty
// book; a claims.json or journal record that does not decode is an error
// that names the file.
func (b *ClaimBook) Load() error {
	return b.open()
}

func (b *ClaimBook) open() error {
	if b.path == "" {
		return nil
	}
	b.openMu.Lock()
	defer b.openMu.Unlock()
	if b.opened {
		return nil
	}
	// The old file is read first, so that a corrupt one stops Load before
	// anything is written.
	legacy, haveLegacy, err := readLegacyClaims(b.path)
	if err != nil {
		return err
	}
	j, err := journal.Open(b.JournalPath(), journal.Options{Kind: claimsJournalKind, Version: claimsJournalVersion})
	if err != nil {
		return fmt.Errorf("open VIP address claims: %w", err)
	}
	loaded := map[vip.NameKey]vip.Claim{}
	var bad []error
	j.Range(func(key string, value []byte) bool {
		var r claimRecord
		if err := json.Unmarshal(value, &r); err != nil || claimJournalKey(r.NameKey) != key {
			bad = append(bad, fmt.Errorf("record %q: %s", key, value))
			return true
		}
		loaded[r.NameKey] = r.Claim
		return true
	})
	if len(bad) > 0 {
		_ = j.Close()
		return fmt.Errorf("VIP address claims journal %s is corrupt (move it aside to start afresh): %w", j.Path(), errors.Join(bad...))
	}
	b.mu.Lock()
	for k, c := range loaded {
		if _, set := b.claims[k]; !set {
			b.claims[k] = c
		}
	}
	b.j = j
	b.mu.Unlock()
	b.opened = true
	if haveLegacy {
		if err := b.putMany(legacy); err != nil {
			return fmt.Errorf("migrate VIP address claims from %s: %w", b.path, err)
		}
		if err := os.Rename(b.path, b.path+".migrated"); err != nil {
			return fmt.Errorf("migrate VIP address claims from %s: %w", b.path, err)
		}
		if err := syncDir(filepath.Dir(b.path)); err != nil {
			return fmt.Errorf("migrate VIP address claims from %s: %w", b.path, err)
		}
	}
	return nil
}

// readLegacyClaims reads an old claims.json.
func readLegacyClaims(path string) (map[vip.NameKey]vip.Claim, bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read VIP address claims: %w", err)
	}
	var recs []claimRecord
	if err := json.Unmarshal(data, &recs); err != nil {
		return nil, false, fmt.Errorf("VIP address claims file %s is corrupt (move it aside to start afresh): %w", path, err)
	}
	out := make(map[vip.NameKey]vip.Claim, len(recs))
	for _, r := range recs {
		out[r.NameKey] = r.Claim
	}
	return out, true, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// claimJournalKey is k's key in the journal: "marathon 4 /app".
func claimJournalKey(k vip.NameKey) string {
	family := " 4 "
	if k.V6 {
		family = " 6 "
	}
	return k.Framework + family + k.Name
}

// Get returns the claim kept for k.
func (b *ClaimBook) Get(k vip.NameKey) (vip.Claim, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.claims[k]
	return c, ok
}

// Len returns how many claims the book keeps.
func (b *ClaimBook) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.claims)
}

// Put keeps a claim; it writes when the claim is new or changed, and
// returns once that is durable.
func (b *ClaimBook) Put(k vip.NameKey, c vip.Claim) error {
	return b.PutMany(map[vip.NameKey]vip.Claim{k: c})
}

// PutMany keeps these claims in one durable write (none when none is new
// or changed). On error none of them is kept.
func (b *ClaimBook) PutMany(claims map[vip.NameKey]vip.Claim) error {
	if err := b.open(); err != nil {
		return err
	}
	return b.putMany(claims)
}

// putMany is PutMany once the book is open.
func (b *ClaimBook) putMany(claims map[vip.NameKey]vip.Claim) error {
	var ops []journal.Op
	changed := make(map[vip.NameKey]vip.Claim, len(claims))
	b.mu.Lock()
	j := b.j
	for k, c := range claims {
		if old, ok := b.claims[k]; ok && old.Addr == c.Addr && old.Since.Equal(c.Since) {
			continue
		}
		changed[k] = c
	}
	if j == nil { // memory only
		for k, c := range changed {
			b.claims[k] = c
		}
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	if len(changed) == 0 {
		return nil
	}
	for k, c := range changed {
		raw, err := json.Marshal(claimRecord{k, c})
		if err != nil {
			return fmt.Errorf("encode VIP address claim %v: %w", k, err)
		}
		ops = append(ops, journal.Op{Key: claimJournalKey(k), Value: raw})
	}
	err := j.Apply(ops, func() {
		b.mu.Lock()
		for k, c := range changed {
			b.claims[k] = c
		}
		b.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("save VIP address claims: %w", err)
	}
	return nil
}

// Forget drops the claims of these keys (names this node no longer
// publishes a backend for) in one durable write. On error none is dropped.
func (b *ClaimBook) Forget(keys map[vip.NameKey]bool) error {
	if err := b.open(); err != nil {
		return err
	}
	var ops []journal.Op
	var gone []vip.NameKey
	b.mu.Lock()
	j := b.j
	for k := range keys {
		if _, ok := b.claims[k]; !ok {
			continue
		}
		if j == nil {
			delete(b.claims, k)
			continue
		}
		gone = append(gone, k)
		ops = append(ops, journal.Op{Key: claimJournalKey(k), Delete: true})
	}
	b.mu.Unlock()
	if len(ops) == 0 {
		return nil
	}
	err := j.Apply(ops, func() {
		b.mu.Lock()
		for _, k := range gone {
			delete(b.claims, k)
		}
		b.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("forget VIP address claims: %w", err)
	}
	return nil
}

// Close closes the book's journal; later changes fail. Close is idempotent.
func (b *ClaimBook) Close() error {
	b.mu.Lock()
	j := b.j
	b.mu.Unlock()
	if j == nil {
		return nil
	}
	return j.Close()
}

// Stats returns the journal's counters (zero in memory).
func (b *ClaimBook) Stats() journal.Stats {
	b.mu.Lock()
	j := b.j
	b.mu.Unlock()
	if j == nil {
		return journal.Stats{}
	}
	return j.Stats()
}
