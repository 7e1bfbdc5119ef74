package docker

import (
	"slices"
	"strings"

	"github.com/l4lb/l4lb/pkg/source"
)

// entry is what one running, labelled container gives: its backends and
// why it gives no more.
type entry struct {
	id, name string
	backends []Backend
	// problem says why the container, or some of its ports, is not
	// published: bad labels, or no address other nodes reach. "" when all
	// is well.
	problem string
	// unroutable is true when the problem is an address other nodes
	// cannot reach (not bad labels).
	unroutable bool
}

// book is the source's state: the containers it knows and the backends
// it has published. A key given by two containers goes to the one whose
// name (then ID) sorts first. Changes are applied by difference: each one
// touches only the keys of the containers it changes, and commit returns
// what changed for those keys since the last commit. Not safe for
// concurrent use.
type book struct {
	containers map[string]*entry   // by container ID
	claims     map[string][]*entry // key -> containers giving it, sorted by name, then ID
	published  map[string]Backend  // key -> the first claimant's backend
	before     map[string]*Backend // key -> published at the last commit (nil: absent), for keys touched since
}

func newBook() *book {
	return &book{
		containers: map[string]*entry{},
		claims:     map[string][]*entry{},
		published:  map[string]Backend{},
		before:     map[string]*Backend{},
	}
}

// set replaces what container e.id gives with e.
func (b *book) set(e *entry) {
	b.remove(e.id)
	b.containers[e.id] = e
	for _, be := range e.backends {
		k := be.Key()
		cs := b.claims[k]
		i, _ := slices.BinarySearchFunc(cs, e, compareEntries)
		b.claims[k] = slices.Insert(cs, i, e)
		b.refresh(k)
	}
}

// remove forgets container id.
func (b *book) remove(id string) {
	old, ok := b.containers[id]
	if !ok {
		return
	}
	delete(b.containers, id)
	for _, be := range old.backends {
		k := be.Key()
		cs := slices.DeleteFunc(b.claims[k], func(c *entry) bool { return c == old })
		if len(cs) == 0 {
			delete(b.claims, k)
		} else {
			b.claims[k] = cs
		}
		b.refresh(k)
	}
}

// refresh sets the published backend of key k from its claims, noting k
// as touched.
func (b *book) refresh(k string) {
	if _, noted := b.before[k]; !noted {
		if cur, ok := b.published[k]; ok {
			b.before[k] = &cur
		} else {
			b.before[k] = nil
		}
	}
	cs := b.claims[k]
	if len(cs) == 0 {
		delete(b.published, k)
		return
	}
	for _, be := range cs[0].backends {
		if be.Key() == k {
			b.published[k] = be
			return
		}
	}
}

// commit returns the published backends added or changed, and the keys
// removed, since the last commit, both sorted by key.
func (b *book) commit() (set []Backend, removed []string) {
	for k, was := range b.before {
		now, ok := b.published[k]
		switch {
		case ok && (was == nil || *was != now):
			set = append(set, now)
		case !ok && was != nil:
			removed = append(removed, k)
		}
	}
	clear(b.before)
	slices.SortFunc(set, func(x, y Backend) int { return strings.Compare(x.Key(), y.Key()) })
	slices.Sort(removed)
	return set, removed
}

// shadowed lists, for people, the backends a container gives that another
// container's take, as "KEY: container A (taken by B)".
func (b *book) shadowed() []string {
	var out []string
	for k, cs := range b.claims {
		for _, c := range cs[1:] {
			out = append(out, k+": container "+c.name+" (taken by "+cs[0].name+")")
		}
	}
	slices.Sort(out)
	return out
}

// rebuild returns what b would publish if built from its containers from
// scratch: the oracle of the property test.
func (b *book) rebuild() map[string]Backend {
	ids := make([]*entry, 0, len(b.containers))
	for _, e := range b.containers {
		ids = append(ids, e)
	}
	slices.SortFunc(ids, compareEntries)
	out := map[string]Backend{}
	for _, e := range ids {
		for _, be := range e.backends {
			if _, taken := out[be.Key()]; !taken {
				out[be.Key()] = be
			}
		}
	}
	return out
}

// list returns the published backends sorted by key.
func (b *book) list() []Backend {
	out := make([]Backend, 0, len(b.published))
	for _, be := range b.published {
		out = append(out, be)
	}
	slices.SortFunc(out, func(x, y Backend) int { return strings.Compare(x.Key(), y.Key()) })
	return out
}

func compareEntries(x, y *entry) int {
	if c := strings.Compare(x.name, y.name); c != 0 {
		return c
	}
	return strings.Compare(x.id, y.id)
}

// locals returns the Locals of bs.
func locals(bs []Backend) []source.Local {
	out := make([]source.Local, len(bs))
	for i, b := range bs {
		out[i] = b.Local
	}
	return out
}
