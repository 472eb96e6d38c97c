package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// kind describes how one object type is stored, named and authorised, so
// that the CRUD handlers are written once.
type kind[T any] struct {
	// store is the store kind; noun names the object in actions
	// ("Proxy" gives dbproxy:GetProxy) and plural in list actions.
	store, noun, plural string
	// key and resource derive the store key and the IAM resource from
	// the request path.
	key, resource func(r *http.Request) string
	// listPrefix and listResource scope a list request.
	listPrefix, listResource func(r *http.Request) string
	meta                     func(*T) *model.Meta
	// bind copies path parameters into a decoded body, refusing a body
	// that names another object.
	bind func(r *http.Request, v *T) *model.Error
	// noZero maps the JSON paths of fields whose range starts at 1 to
	// their error for an explicit 0. Such a field decodes to 0 when it
	// is left out, which stands for its default, so the model alone
	// cannot tell a 0 that was sent (a mistake: it is out of range, and
	// silently taking the default hides that) from one that was not.
	noZero map[string]string
	// check normalises and validates a decoded body.
	check func(v *T) error
	// prepare runs inside the write transaction: it checks references,
	// allocates ports and merges write-only fields from cur (nil on
	// create).
	prepare func(tx store.Tx, cur, next *T) error
	// beforeDelete runs inside the delete transaction: it refuses or
	// cascades.
	beforeDelete func(tx store.Tx, cur *T) error
	// show prepares an object for a response (hides secrets, fills
	// computed fields).
	show func(ctx context.Context, v *T)
	// what names the object in messages.
	what func(r *http.Request) string
}

// getHandler serves GET of one object.
func getHandler[T any](a *API, k *kind[T]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := a.authorize(r.Context(), "dbproxy:Get"+k.noun, k.resource(r)); err != nil {
			a.fail(w, r, err)
			return
		}
		var v T
		if err := a.getObject(r.Context(), k.store, k.key(r), &v); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				err = errNotFound(k.what(r))
			}
			a.fail(w, r, err)
			return
		}
		if k.show != nil {
			k.show(r.Context(), &v)
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// listHandler serves GET of a collection.
func listHandler[T any](a *API, k *kind[T]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := a.authorize(r.Context(), "dbproxy:List"+k.plural, k.listResource(r)); err != nil {
			a.fail(w, r, err)
			return
		}
		var items []T
		rev, err := a.opts.Store.View(r.Context(), func(rd store.Reader) error {
			var err error
			items, err = store.DecodeAll[T](rd, k.store, k.listPrefix(r))
			return err
		})
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if k.show != nil {
			for i := range items {
				k.show(r.Context(), &items[i])
			}
		}
		writeJSON(w, http.StatusOK, model.List[T]{Items: items, Revision: rev})
	}
}

// preconditions are the optimistic-concurrency headers of a write.
type preconditions struct {
	ifMatch     uint64 // 0: none
	ifNoneMatch bool   // "*": create only
}

func parsePreconditions(r *http.Request) (preconditions, *model.Error) {
	var p preconditions
	if v := r.Header.Get("If-Match"); v != "" && v != "*" {
		n, err := strconv.ParseUint(strings.Trim(v, `"`), 10, 64)
		if err != nil || n == 0 {
			return p, errBadRequest("If-Match", "must be an object revision (a positive number), got %q", v)
		}
		p.ifMatch = n
	}
	if v := r.Header.Get("If-None-Match"); v != "" {
		if v != "*" {
			return p, errBadRequest("If-None-Match", `only "*" (create only) is supported, got %q`, v)
		}
		p.ifNoneMatch = true
	}
	return p, nil
}

func (p preconditions) check(exists bool, rev uint64, what string) error {
	if p.ifNoneMatch && exists {
		return &model.Error{Status: http.StatusPreconditionFailed, Code: "AlreadyExists", Message: what + " already exists"}
	}
	if p.ifMatch != 0 {
		if !exists {
			return errNotFound(what)
		}
		if p.ifMatch != rev {
			return &model.Error{Status: http.StatusPreconditionFailed, Code: "PreconditionFailed",
				Message: fmt.Sprintf("%s is at revision %d, not %d as If-Match expects", what, rev, p.ifMatch)}
		}
	}
	return nil
}

// putHandler serves PUT: create or replace, idempotently.
func putHandler[T any](a *API, k *kind[T]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if err := a.authorize(ctx, "dbproxy:Put"+k.noun, k.resource(r)); err != nil {
			a.fail(w, r, err)
			return
		}
		pre, perr := parsePreconditions(r)
		if perr != nil {
			a.fail(w, r, perr)
			return
		}
		var next T
		zeros, derr := decodeStrict(r, &next)
		if derr != nil {
			a.fail(w, r, derr)
			return
		}
		if err := refuseZeros(k.noZero, zeros); err != nil {
			a.fail(w, r, err)
			return
		}
		if err := k.bind(r, &next); err != nil {
			a.fail(w, r, err)
			return
		}
		if err := k.check(&next); err != nil {
			a.fail(w, r, validationError(err))
			return
		}
		key, what := k.key(r), k.what(r)
		created := false
		var out T
		_, err := a.opts.Store.Update(ctx, func(tx store.Tx) error {
			var cur T
			exists := true
			if err := getInto(tx, k.store, key, &cur); err != nil {
				if !errors.Is(err, store.ErrNotFound) {
					return err
				}
				exists = false
			}
			if err := pre.check(exists, k.meta(&cur).Revision, what); err != nil {
				return err
			}
			candidate := next
			var curp *T
			if exists {
				curp = &cur
			}
			if k.prepare != nil {
				if err := k.prepare(tx, curp, &candidate); err != nil {
					return err
				}
			}
			if exists && sameContent(k, &cur, &candidate) {
				out = cur
				return nil
			}
			m := k.meta(&candidate)
			now := a.opts.Now().UTC()
			m.CreatedAt, m.UpdatedAt, m.Revision = now, now, tx.Revision()
			if exists {
				m.CreatedAt = k.meta(&cur).CreatedAt
			}
			b, err := json.Marshal(candidate)
			if err != nil {
				return fmt.Errorf("encode %s: %w", what, err)
			}
			if err := tx.Put(k.store, key, b); err != nil {
				return err
			}
			created = !exists
			out = candidate
			a.log.Info("object written", "kind", k.store, "key", key, "revision", tx.Revision(), "by", principalFrom(ctx).User)
			return nil
		})
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if k.show != nil {
			k.show(ctx, &out)
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		writeJSON(w, status, out)
	}
}

// refuseZeros refuses the first field of noZero, in path order, that the
// body set to 0.
func refuseZeros(noZero map[string]string, zeros map[string]bool) *model.Error {
	paths := make([]string, 0, len(noZero))
	for p := range noZero {
		if zeros[p] {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return nil
	}
	slices.Sort(paths)
	return errBadRequest(paths[0], "%s", noZero[paths[0]])
}

// sameContent reports whether two objects differ only in their metadata.
func sameContent[T any](k *kind[T], a, b *T) bool {
	x, y := *a, *b
	*k.meta(&x), *k.meta(&y) = model.Meta{}, model.Meta{}
	bx, err1 := json.Marshal(x)
	by, err2 := json.Marshal(y)
	return err1 == nil && err2 == nil && bytes.Equal(bx, by)
}

// deleteHandler serves DELETE.
func deleteHandler[T any](a *API, k *kind[T]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if err := a.authorize(ctx, "dbproxy:Delete"+k.noun, k.resource(r)); err != nil {
			a.fail(w, r, err)
			return
		}
		pre, perr := parsePreconditions(r)
		if perr != nil {
			a.fail(w, r, perr)
			return
		}
		key, what := k.key(r), k.what(r)
		rev, err := a.opts.Store.Update(ctx, func(tx store.Tx) error {
			var cur T
			if err := getInto(tx, k.store, key, &cur); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return errNotFound(what)
				}
				return err
			}
			if err := pre.check(true, k.meta(&cur).Revision, what); err != nil {
				return err
			}
			if k.beforeDelete != nil {
				if err := k.beforeDelete(tx, &cur); err != nil {
					return err
				}
			}
			a.log.Info("object deleted", "kind", k.store, "key", key, "revision", tx.Revision(), "by", principalFrom(ctx).User)
			return tx.Delete(k.store, key)
		})
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, model.Deleted{Deleted: what, Revision: rev})
	}
}

// pathName returns a path parameter.
func pathName(name string) func(r *http.Request) string {
	return func(r *http.Request) string { return r.PathValue(name) }
}

// bindField sets *field from the path parameter, refusing a body that
// names something else.
func bindField(r *http.Request, param, field string, v *string) *model.Error {
	p := r.PathValue(param)
	if *v != "" && *v != p {
		return errBadRequest(field, "is %q in the body but %q in the path", *v, p)
	}
	*v = p
	return nil
}

// exists reports whether kind/key is stored.
func exists(r store.Reader, kind, key string) (bool, error) {
	_, err := r.Get(kind, key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
