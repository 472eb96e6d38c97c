package store

import "errors"

// More errors a backend returns, beside those in store.go; callers test
// them with errors.Is.
var (
	// ErrInvalidKey means a kind or key is empty or too long to store.
	ErrInvalidKey = errors.New("invalid kind or key")
	// ErrFormat means stored data is in a format this build cannot read:
	// written by a newer version, or damaged.
	ErrFormat = errors.New("unsupported or damaged store format")
	// ErrLocked means another process holds the store's file.
	ErrLocked = errors.New("store is locked by another process")
	// ErrUnavailable means a remote store (etcd) did not answer in time or
	// refused the request, for example without a quorum; trying again
	// later may succeed.
	ErrUnavailable = errors.New("store unavailable")
)
