package store

import (
	"context"
	"fmt"
	"io"

	"github.com/dbproxy/dbproxy/internal/seal"
)

// Encrypted wraps inner so that the values of the listed kinds are sealed
// with s on Put and opened on Get and List; other kinds pass through. The
// additional data of each value is kind + "/" + key, so a sealed value
// copied to another key does not open. Revisions, subscriptions and Close
// are inner's. A value that does not open (wrong master key, tampering, or
// a plaintext value from before the kind was encrypted) makes Get and List
// fail with an error wrapping seal.ErrDecrypt. The control plane passes
// model.SensitiveKinds. Encrypted panics when s is nil, because silently
// storing secrets in plaintext is worse than not starting.
func Encrypted(inner Store, s *seal.Sealer, kinds ...string) Store {
	if s == nil {
		panic("store.Encrypted: nil sealer")
	}
	e := &encrypted{inner: inner, sealer: s, kinds: make(map[string]bool, len(kinds))}
	for _, k := range kinds {
		e.kinds[k] = true
	}
	return e
}

type encrypted struct {
	inner  Store
	sealer *seal.Sealer
	kinds  map[string]bool // read-only after Encrypted
}

func additionalData(kind, key string) []byte {
	return []byte(kind + "/" + key)
}

func (e *encrypted) View(ctx context.Context, fn func(r Reader) error) (uint64, error) {
	return e.inner.View(ctx, func(r Reader) error {
		return fn(encReader{e: e, r: r})
	})
}

func (e *encrypted) Update(ctx context.Context, fn func(tx Tx) error) (uint64, error) {
	return e.inner.Update(ctx, func(tx Tx) error {
		return fn(encTx{encReader: encReader{e: e, r: tx}, tx: tx})
	})
}

func (e *encrypted) Revision() uint64                   { return e.inner.Revision() }
func (e *encrypted) Subscribe() (<-chan uint64, func()) { return e.inner.Subscribe() }
func (e *encrypted) Close() error                       { return e.inner.Close() }

// Backup copies the inner store as it is: sealed values stay sealed, so a
// backup is no more sensitive than the store file.
func (e *encrypted) Backup(ctx context.Context, w io.Writer) (uint64, error) {
	return e.inner.Backup(ctx, w)
}

// open replaces obj's sealed value by its plaintext when its kind is
// sensitive.
func (e *encrypted) open(obj Object) (Object, error) {
	if !e.kinds[obj.Kind] {
		return obj, nil
	}
	plain, err := e.sealer.Open(obj.Value, additionalData(obj.Kind, obj.Key))
	if err != nil {
		return Object{}, fmt.Errorf("%s/%s: %w", obj.Kind, obj.Key, err)
	}
	obj.Value = plain
	return obj, nil
}

type encReader struct {
	e *encrypted
	r Reader
}

func (r encReader) Get(kind, key string) (Object, error) {
	obj, err := r.r.Get(kind, key)
	if err != nil {
		return Object{}, err
	}
	return r.e.open(obj)
}

func (r encReader) List(kind, prefix string) ([]Object, error) {
	objs, err := r.r.List(kind, prefix)
	if err != nil {
		return nil, err
	}
	if !r.e.kinds[kind] {
		return objs, nil
	}
	for i := range objs {
		if objs[i], err = r.e.open(objs[i]); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

type encTx struct {
	encReader
	tx Tx
}

func (t encTx) Put(kind, key string, value []byte) error {
	if t.e.kinds[kind] {
		sealed, err := t.e.sealer.Seal(value, additionalData(kind, key))
		if err != nil {
			return fmt.Errorf("put %s/%s: %w", kind, key, err)
		}
		value = sealed
	}
	return t.tx.Put(kind, key, value)
}

func (t encTx) Delete(kind, key string) error { return t.tx.Delete(kind, key) }
func (t encTx) Revision() uint64              { return t.tx.Revision() }
