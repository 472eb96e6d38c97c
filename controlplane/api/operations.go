package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dbproxy/dbproxy/internal/model"
)

// operationRoutes registers the operations that are not objects: identity, nodes, rollout, status, backup, and the answer to an unknown path.
func (a *API) operationRoutes() {
	a.mux.HandleFunc("GET /v1/identity", a.identity)
	a.mux.HandleFunc("GET /v1/nodes", a.nodes)
	a.mux.HandleFunc("GET /v1/rollout", a.rollout)
	a.mux.HandleFunc("GET /v1/status", a.status)
	a.mux.HandleFunc("GET /v1/backup", a.backup)
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &model.Error{Status: http.StatusNotFound, Code: "UnknownOperation", Message: fmt.Sprintf("no API operation %s %s", r.Method, r.URL.Path)})
	})
}

func (a *API) identity(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	writeJSON(w, http.StatusOK, map[string]string{"user": p.User, "access_key_id": p.AccessKeyID})
}

func (a *API) nodes(w http.ResponseWriter, r *http.Request) {
	if err := a.authorize(r.Context(), "dbproxy:ListNodes", "node/*"); err != nil {
		a.fail(w, r, err)
		return
	}
	nodes := []model.Node{}
	if a.opts.Fleet != nil {
		nodes = append(nodes, a.opts.Fleet.Nodes()...)
	}
	writeJSON(w, http.StatusOK, model.List[model.Node]{Items: nodes})
}

// rollout waits (up to ?wait=, default 0) until the nodes of ?zones= (all
// when empty) serve ?revision= (default: the newest).
func (a *API) rollout(w http.ResponseWriter, r *http.Request) {
	if err := a.authorize(r.Context(), "dbproxy:GetRollout", "node/*"); err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	rev := a.opts.Store.Revision()
	if v := q.Get("revision"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			a.fail(w, r, errBadRequest("revision", "must be a store revision, got %q", v))
			return
		}
		rev = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			a.fail(w, r, errBadRequest("wait", "must be a duration such as 30s, got %q", v))
			return
		}
		wait = min(d, a.opts.MaxRolloutWait)
	}
	var zones []string
	if v := q.Get("zones"); v != "" {
		zones = strings.Split(v, ",")
	}
	out := model.Rollout{Revision: rev, Zones: zones, Nodes: []model.Node{}}
	if zones == nil {
		out.Zones = []string{}
	}
	if a.opts.Fleet == nil {
		out.Complete = true
		writeJSON(w, http.StatusOK, out)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	nodes, rejected, err := a.opts.Fleet.WaitRollout(ctx, rev, zones)
	out.Nodes = append(out.Nodes, nodes...)
	out.Rejected = rejected
	for _, z := range zones {
		if !slices.ContainsFunc(nodes, func(n model.Node) bool { return n.Zone == z && n.Connected }) {
			out.ZonesWithoutNodes = append(out.ZonesWithoutNodes, z)
		}
	}
	switch {
	case err == nil:
		out.Complete = true
	case rejected:
		out.Message = err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		out.Message = fmt.Sprintf("not every node acked revision %d within %s", rev, wait)
		if len(out.ZonesWithoutNodes) > 0 {
			out.Message += fmt.Sprintf("; no node is connected in zone(s) %s", strings.Join(out.ZonesWithoutNodes, ", "))
		}
	default:
		out.Message = err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

// backup answers with a consistent copy of the store file (sealed values
// stay sealed: restoring it needs the same master key). It is built in
// memory first, so that a failure is an error answer rather than a cut
// file.
func (a *API) backup(w http.ResponseWriter, r *http.Request) {
	if err := a.authorize(r.Context(), "dbproxy:GetBackup", "backup"); err != nil {
		a.fail(w, r, err)
		return
	}
	var buf bytes.Buffer
	rev, err := a.opts.Store.Backup(r.Context(), &buf)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="state-%d.db"`, rev))
	w.Header().Set(model.RevisionHeader, strconv.FormatUint(rev, 10))
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes())
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	if err := a.authorize(r.Context(), "dbproxy:GetStatus", "status"); err != nil {
		a.fail(w, r, err)
		return
	}
	connected, total := 0, 0
	if a.opts.Fleet != nil {
		for _, n := range a.opts.Fleet.Nodes() {
			total++
			if n.Connected {
				connected++
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"revision": a.opts.Store.Revision(), "nodes": total, "nodes_connected": connected})
}
