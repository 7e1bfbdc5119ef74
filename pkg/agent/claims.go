package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/l4lb/l4lb/pkg/atomicfile"
	"github.com/l4lb/l4lb/vip"
)

// ClaimKey identifies a named VIP's address in the address book: the
// framework and the app's path, lower-cased, and the address family.
type ClaimKey struct {
	Framework string
	Name      string
	V6        bool
}

// ClaimKeyOf is the ClaimKey of a named VIP's registration.
func ClaimKeyOf(r vip.Registration) ClaimKey {
	fw := r.Framework
	if fw == "" {
		fw = vip.DefaultFramework
	}
	return ClaimKey{Framework: strings.ToLower(fw), Name: strings.ToLower(r.VIP.Name), V6: r.Backend.Addr().Is6() && !r.Backend.Addr().Is4In6()}
}

// ClaimBook keeps the address claims this node published, in a file under
// the state directory, so that after a restart the node claims the same
// addresses (and so keeps its VIPs' addresses even when it alone holds
// their backends). An empty path keeps them in memory only.
type ClaimBook struct {
	path string
	// mu guards claims.
	mu     sync.Mutex
	claims map[ClaimKey]vip.Claim
}

type claimRecord struct {
	ClaimKey
	vip.Claim
}

// NewClaimBook returns a book kept in path ("" for memory only). Load reads
// what a previous run left.
func NewClaimBook(path string) *ClaimBook {
	return &ClaimBook{path: path, claims: map[ClaimKey]vip.Claim{}}
}

// Load reads the book's file; a missing file is an empty book.
func (b *ClaimBook) Load() error {
	if b.path == "" {
		return nil
	}
	data, err := os.ReadFile(b.path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read VIP address claims: %w", err)
	}
	var recs []claimRecord
	if err := json.Unmarshal(data, &recs); err != nil {
		return fmt.Errorf("VIP address claims file %s is corrupt (move it aside to start afresh): %w", b.path, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range recs {
		b.claims[r.ClaimKey] = r.Claim
	}
	return nil
}

// Get returns the claim kept for k.
func (b *ClaimBook) Get(k ClaimKey) (vip.Claim, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.claims[k]
	return c, ok
}

// Put keeps a claim; it writes the file when the claim is new or changed.
func (b *ClaimBook) Put(k ClaimKey, c vip.Claim) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.claims[k]; ok && old.Addr == c.Addr && old.Since.Equal(c.Since) {
		return nil
	}
	b.claims[k] = c
	return b.saveLocked()
}

// Forget drops the claims of these keys (names this node no longer
// publishes a backend for).
func (b *ClaimBook) Forget(keys map[ClaimKey]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := false
	for k := range keys {
		if _, ok := b.claims[k]; ok {
			delete(b.claims, k)
			changed = true
		}
	}
	if changed {
		_ = b.saveLocked()
	}
}

func (b *ClaimBook) saveLocked() error {
	if b.path == "" {
		return nil
	}
	recs := make([]claimRecord, 0, len(b.claims))
	for k, c := range b.claims {
		recs = append(recs, claimRecord{k, c})
	}
	sort.Slice(recs, func(i, j int) bool {
		a, c := recs[i].ClaimKey, recs[j].ClaimKey
		if a.Framework != c.Framework {
			return a.Framework < c.Framework
		}
		if a.Name != c.Name {
			return a.Name < c.Name
		}
		return !a.V6 && c.V6
	})
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return fmt.Errorf("encode VIP address claims: %w", err)
	}
	if err := atomicfile.Write(b.path, data, nil); err != nil {
		return fmt.Errorf("save VIP address claims: %w", err)
	}
	return nil
}
