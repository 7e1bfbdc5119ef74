// Package journal keeps a keyed state on disk as an append-only log: each
// change is one framed, checksummed record ("put key value" or "delete
// key"), written and fsynced before the change is acknowledged, with
// concurrent changes sharing one write and one fsync (group commit). A torn
// tail left by a crash is detected by its framing and cut off at open; the
// log is compacted (rewritten with only its live records, atomically) once
// it holds more than twice the live data, so a change costs O(1) amortised
// whatever the state's size.
//
// It knows nothing of what the values mean: package source keeps the API's
// registrations in one, package agent the VIP address claims. One process
// owns a journal file at a time.
package journal
