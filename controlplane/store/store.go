// Package store keeps the control plane's desired state: a transactional,
// revisioned key/value store of JSON objects grouped by kind. This file
// holds only the interfaces; each backend is its own file (bbolt.go for the
// embedded single-node store, etcd.go for state that several control-plane
// replicas share). Both count revisions the same way, one per committed
// Update, and back up to the same bbolt file (backup.go).
package store

import (
	"context"
	"errors"
	"io"
)

// Errors a backend returns; callers test them with errors.Is.
var (
	// ErrNotFound means no object has that kind and key.
	ErrNotFound = errors.New("not found")
	// ErrConflict means an expected revision did not match.
	ErrConflict = errors.New("revision conflict")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store closed")
)

// Object is one stored value with its revisions. CreateRevision is the
// store revision that created the object, ModRevision the one that last
// changed it.
type Object struct {
	Kind           string
	Key            string
	Value          []byte
	CreateRevision uint64
	ModRevision    uint64
}

// Reader reads objects.
type Reader interface {
	// Get returns one object or ErrNotFound.
	Get(kind, key string) (Object, error)
	// List returns the objects of kind whose keys start with prefix, in
	// key order.
	List(kind, prefix string) ([]Object, error)
}

// Tx is one read-write transaction. Writes become visible, and durable, only
// when the function given to Store.Update returns nil.
type Tx interface {
	Reader
	// Put writes value under kind/key. The object's ModRevision becomes the
	// transaction's revision.
	Put(kind, key string, value []byte) error
	// Delete removes kind/key; ErrNotFound when absent.
	Delete(kind, key string) error
	// Revision is the revision this transaction commits as.
	Revision() uint64
}

// Store is a revisioned, transactional object store.
type Store interface {
	// View runs fn in a read-only snapshot; it returns the revision that
	// snapshot shows.
	View(ctx context.Context, fn func(r Reader) error) (uint64, error)
	// Update runs fn in a serialisable read-write transaction. When fn
	// returns nil and wrote something, the transaction commits durably (a
	// crash after Update returns loses nothing) as one new revision,
	// which Update returns. When fn wrote nothing, Update returns the
	// current revision and no new one is made. An error from fn rolls
	// back and is returned as is. A backend with optimistic concurrency
	// (etcd) runs fn again when another writer committed first, so fn
	// must leave nothing behind but its writes to tx and the results it
	// assigns.
	Update(ctx context.Context, fn func(tx Tx) error) (uint64, error)
	// Revision returns the newest committed revision this process knows
	// of: on a shared store (etcd), other processes' commits arrive with
	// the watch, a moment after they commit; View gives the current one.
	Revision() uint64
	// Subscribe returns a channel that receives the newest revision after
	// every commit (values may be coalesced; the channel has room for one)
	// and a function that ends the subscription.
	Subscribe() (<-chan uint64, func())
	// Backup writes a consistent copy of the whole store to w, as the
	// backend's own file format (sealed values stay sealed), and returns
	// the revision it holds. Writes go on meanwhile.
	Backup(ctx context.Context, w io.Writer) (uint64, error)
	// Close releases the store.
	Close() error
}
