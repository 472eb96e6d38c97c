// Package api serves the control plane's admin REST API under /v1: CRUD for
// the desired-state objects and IAM identities, read-only node and rollout
// status. Every request is SigV4-signed and authorised against IAM
// policies; errors are JSON with a stable code, a message and, for invalid
// input, the field.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// Fleet is what the API needs from the xDS server: the nodes it knows and a
// way to wait for a rollout.
type Fleet interface {
	Nodes() []model.Node
	// WaitRollout waits until every connected node in zones (nil: all)
	// acked a configuration built at revision >= rev. rejected reports
	// that a node refused it.
	WaitRollout(ctx context.Context, rev uint64, zones []string) (nodes []model.Node, rejected bool, err error)
}

// Options configure the API.
type Options struct {
	Store store.Store
	Fleet Fleet
	// TargetHealth returns what the nodes report about a target: its
	// health (AVAILABLE, UNAVAILABLE, DEGRADED, UNKNOWN), the role they
	// discovered and, when some find it unhealthy, why. Nil reports
	// UNKNOWN.
	TargetHealth func(ctx context.Context, t *model.Target) (health, role, reason string)
	// Observe, when set, is told of every request once it is answered.
	Observe func(method, path string, status int, d time.Duration)
	Logger  hclog.Logger
	// Region is the SigV4 region requests must be signed for.
	Region string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Skew is the allowed clock skew of signed requests (default 5m).
	Skew time.Duration
	// PortMin and PortMax bound allocated proxy and endpoint ports
	// (default 6033-6999).
	PortMin, PortMax int
	// MaxRolloutWait bounds ?wait= on /v1/rollout (default 10m).
	MaxRolloutWait time.Duration
	// MaxAttachmentsPerUser bounds the policies attached to one user
	// (default 10, AWS IAM's default quota of managed policies per
	// user). With iam.MaxStatements per policy it bounds what every
	// request of the user costs to authorise.
	MaxAttachmentsPerUser int
}

// API is the admin API handler.
type API struct {
	opts Options
	log  hclog.Logger
	mux  *http.ServeMux
	// refused limits the log lines of refused unauthenticated requests.
	refused *logLimiter
	// policies holds the users' parsed policies for the store's
	// current revision.
	policies *identity.Policies
}

// New returns the API handler.
func New(opts Options) (*API, error) {
	if opts.Store == nil {
		return nil, errors.New("api: a store is required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Region == "" {
		opts.Region = sigv4.DefaultRegion
	}
	if opts.PortMin == 0 {
		opts.PortMin, opts.PortMax = 6033, 6999
	}
	if opts.PortMax < opts.PortMin {
		return nil, fmt.Errorf("api: port range %d-%d is empty", opts.PortMin, opts.PortMax)
	}
	if opts.MaxRolloutWait == 0 {
		opts.MaxRolloutWait = 10 * time.Minute
	}
	if opts.MaxAttachmentsPerUser == 0 {
		opts.MaxAttachmentsPerUser = 10
	}
	a := &API{opts: opts, log: opts.Logger, mux: http.NewServeMux(),
		refused:  newLogLimiter(opts.Now, refusedLogBurst, refusedLogEvery),
		policies: identity.NewPolicies(opts.Store, opts.Logger)}
	a.routes()
	return a, nil
}

// ServeHTTP authenticates the request and dispatches it.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := a.opts.Now()
	rw := &statusWriter{ResponseWriter: w}
	// Registered first, so that it runs after the recovery below.
	var p *Principal
	defer func() {
		status := rw.status
		if status == 0 {
			status = http.StatusOK
		}
		if a.opts.Observe != nil {
			a.opts.Observe(r.Method, r.URL.Path, status, a.opts.Now().Sub(start))
		}
		if p == nil {
			return // refused before it was authenticated; logged there
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			a.log.Debug("request", "method", r.Method, "path", logPath(r.URL.Path), "status", status,
				"access_key_id", p.AccessKeyID, "duration", a.opts.Now().Sub(start))
			return
		}
		// Every write attempt is an audit line, whatever its outcome
		// (a panic included): who, what, and the store's revision after
		// it (under concurrent writes, not necessarily its own commit).
		a.log.Info("write", "method", r.Method, "path", logPath(r.URL.Path), "status", status,
			"user", p.User, "access_key_id", p.AccessKeyID, "revision", a.opts.Store.Revision(),
			"duration", a.opts.Now().Sub(start))
	}()
	defer func() {
		if v := recover(); v != nil {
			a.log.Error("panic in API handler", "method", r.Method, "path", logPath(r.URL.Path), "panic", v)
			if rw.status == 0 {
				writeError(rw, errInternal())
			}
		}
	}()
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxBody))
	if err != nil {
		writeError(rw, &model.Error{Status: http.StatusRequestEntityTooLarge, Code: "RequestTooLarge", Message: fmt.Sprintf("the request body is over %d bytes or could not be read", maxBody)})
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	principal, err := a.authenticate(r, body)
	if err != nil {
		aerr := authError(err)
		if aerr.Status >= 500 {
			a.log.Error("cannot authenticate the request", "method", r.Method, "path", logPath(r.URL.Path), "error", err)
		} else {
			if ok, dropped := a.refused.allow(); ok {
				a.log.Info("request refused", "method", r.Method, "path", logPath(r.URL.Path), "remote", r.RemoteAddr, "code", aerr.Code,
					"not_logged_before", dropped)
			}
		}
		writeError(rw, aerr)
		return
	}
	p = principal
	if e := a.dotSegment(r); e != nil {
		writeError(rw, e)
		return
	}
	ctx := context.WithValue(r.Context(), principalKey{}, p)
	a.mux.ServeHTTP(rw, r.WithContext(ctx))
}

// pathField names the JSON field of a path wildcard of the routes.
func pathField(wildcard string) string {
	switch wildcard {
	case "policy":
		return "policy_name"
	case "id":
		return "access_key_id"
	}
	return wildcard // name, proxy, user
}

// dotSegment refuses a path with a "." or ".." segment (also spelled
// %2E), naming the field it stands in. The mux would answer it with a
// redirect to the cleaned path, which names another object or none: a
// client that follows it would write or delete where it did not mean to,
// and one that does not gets a 307 that says nothing about its mistake.
func (a *API) dotSegment(r *http.Request) *model.Error {
	segs := strings.Split(r.URL.Path, "/")
	at := slices.IndexFunc(segs, func(s string) bool { return s == "." || s == ".." })
	if at < 0 {
		return nil
	}
	// The route that a name in place of the dot segment would take
	// tells which field it is.
	probe := r.Clone(r.Context())
	probeSegs := slices.Clone(segs)
	for i, s := range probeSegs {
		if s == "." || s == ".." {
			probeSegs[i] = "x"
		}
	}
	probe.URL.Path, probe.URL.RawPath = strings.Join(probeSegs, "/"), ""
	field := ""
	if _, pattern := a.mux.Handler(probe); pattern != "" {
		_, route, _ := strings.Cut(pattern, " ")
		if rs := strings.Split(route, "/"); at < len(rs) {
			w := strings.Trim(rs[at], "{}.")
			if w != rs[at] {
				field = pathField(w)
			}
		}
	}
	msg := fmt.Sprintf("%q cannot be a name: the path would be read as another one", segs[at])
	if field == "" {
		return &model.Error{Status: http.StatusBadRequest, Code: "ValidationError", Message: fmt.Sprintf("the path has a %q segment; paths name objects without . or .. segments", segs[at])}
	}
	return errBadRequest(field, "%s", msg)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func errInternal() *model.Error {
	return &model.Error{Status: http.StatusInternalServerError, Code: "InternalError", Message: "the control plane failed to handle the request; see its log"}
}

func errNotFound(what string) *model.Error {
	return &model.Error{Status: http.StatusNotFound, Code: "NotFound", Message: what + " does not exist"}
}

func errConflict(field, format string, a ...any) *model.Error {
	return &model.Error{Status: http.StatusConflict, Code: "Conflict", Field: field, Message: fmt.Sprintf(format, a...)}
}

func errBadRequest(field, format string, a ...any) *model.Error {
	return &model.Error{Status: http.StatusBadRequest, Code: "ValidationError", Field: field, Message: fmt.Sprintf(format, a...)}
}

func validationError(err error) *model.Error {
	if es, ok := model.AsFieldErrors(err); ok {
		e := &model.Error{Status: http.StatusBadRequest, Code: "ValidationError", Message: es.Error(), Field: es[0].Field}
		if len(es) > 1 {
			e.Fields = es
		}
		return e
	}
	return &model.Error{Status: http.StatusBadRequest, Code: "ValidationError", Message: err.Error()}
}

func writeError(w http.ResponseWriter, e *model.Error) {
	writeJSON(w, e.Status, map[string]*model.Error{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"InternalError","message":"cannot encode the response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// fail turns any error from a handler step into a response.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *model.Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, store.ErrInvalidKey):
		// Names in the path are validated only on PUT; a GET or DELETE
		// of a name longer than the store can hold names nothing.
		e = &model.Error{Status: http.StatusBadRequest, Code: "ValidationError", Message: "a name in the path is empty or too long"}
	case errors.Is(err, store.ErrConflict):
		e = &model.Error{Status: http.StatusPreconditionFailed, Code: "PreconditionFailed", Message: "the object changed since the revision given in If-Match"}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		e = &model.Error{Status: http.StatusServiceUnavailable, Code: "RequestCanceled", Message: "the request was canceled or timed out"}
	default:
		a.log.Error("request failed", "method", r.Method, "path", logPath(r.URL.Path), "error", err)
		e = errInternal()
	}
	writeError(w, e)
}

// decode reads a JSON body strictly into v.
func decode(r *http.Request, v any) *model.Error {
	_, err := decodeStrict(r, v)
	return err
}

// decodeStrict reads a JSON body strictly into v (see checkJSON) and
// returns the paths of the fields the body sets to a literal 0.
func decodeStrict(r *http.Request, v any) (zeros map[string]bool, _ *model.Error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		// ServeHTTP read the body into memory already.
		return nil, &model.Error{Status: http.StatusBadRequest, Code: "MalformedJSON", Message: "the request body could not be read"}
	}
	zeros, e := checkJSON(body)
	if e != nil {
		return nil, e
	}
	return zeros, decodeInto(body, v)
}

func decodeInto(body []byte, v any) *model.Error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return errBadRequest(te.Field, "must be a %s, got %s", jsonType(te.Type.Kind().String()), te.Value)
		case errors.As(err, &se):
			return &model.Error{Status: http.StatusBadRequest, Code: "MalformedJSON", Message: fmt.Sprintf("the body is not valid JSON (offset %d): %v", se.Offset, err)}
		case errors.Is(err, io.EOF):
			return &model.Error{Status: http.StatusBadRequest, Code: "MalformedJSON", Message: "the request needs a JSON body"}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return errBadRequest(field, "is not a known field")
		default:
			return &model.Error{Status: http.StatusBadRequest, Code: "MalformedJSON", Message: err.Error()}
		}
	}
	if dec.More() {
		return &model.Error{Status: http.StatusBadRequest, Code: "MalformedJSON", Message: "unexpected data after the JSON object"}
	}
	return nil
}

func jsonType(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "number"
	case kind == "slice":
		return "list"
	case kind == "struct", kind == "map":
		return "object"
	}
	return kind
}

// Principal is the caller of a request.
type Principal struct {
	User        string
	AccessKeyID string
}

type principalKey struct{}

func principalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// authenticate checks the request's signature. The key read for the
// signature also names the caller, so that a request reads its key once.
func (a *API) authenticate(r *http.Request, body []byte) (*Principal, error) {
	var key *model.AccessKey
	v := sigv4.Verifier{Region: a.opts.Region, Now: a.opts.Now, Skew: a.opts.Skew,
		Lookup: func(ctx context.Context, id string) (string, error) {
			k, err := identity.ActiveKey(ctx, a.opts.Store, id)
			if err != nil {
				return "", err
			}
			key = k
			return k.SecretAccessKey, nil
		}}
	id, err := v.VerifyRequest(r.Context(), r, body)
	if err != nil {
		return nil, err
	}
	// A verified signature was computed from the key Lookup read.
	return &Principal{User: key.User, AccessKeyID: id}, nil
}

// authError maps a verification failure to a response that says what is
// wrong without echoing anything secret.
func authError(err error) *model.Error {
	e := &model.Error{Status: http.StatusUnauthorized}
	switch {
	case errors.Is(err, sigv4.ErrMissingAuth):
		e.Code, e.Message = "MissingAuthenticationToken", "the request is not signed; sign it with SigV4 (service dbproxy) using an access key"
	case errors.Is(err, sigv4.ErrUnknownKey):
		e.Code, e.Message = "InvalidAccessKeyId", "the access key id in the signature does not exist"
	case errors.Is(err, sigv4.ErrInactiveKey):
		e.Code, e.Message = "InactiveAccessKey", "the access key is inactive"
	case errors.Is(err, sigv4.ErrBadSignature):
		e.Code, e.Message = "SignatureDoesNotMatch", "the request signature does not match; check the secret access key and the signing method"
	case errors.Is(err, sigv4.ErrExpired), errors.Is(err, sigv4.ErrClockSkew):
		e.Code, e.Message = "RequestExpired", "the request's X-Amz-Date is outside the allowed window; check the client's clock"
	case errors.Is(err, sigv4.ErrWrongService), errors.Is(err, sigv4.ErrWrongRegion):
		e.Code, e.Message = "InvalidCredentialScope", err.Error()
	case errors.Is(err, sigv4.ErrMalformed):
		e.Code, e.Message = "IncompleteSignature", "the request signature is malformed"
	default:
		// Not the request's fault (the store failed reading the key):
		// saying the signature is malformed would send the caller
		// looking in the wrong place.
		e = errInternal()
	}
	return e
}

// authorize checks that the caller may do action on resource.
func (a *API) authorize(ctx context.Context, action, resource string) error {
	if !iam.KnownAction(action) {
		// Policies may name only known actions, so a route checking
		// another could be allowed to nobody but root.
		return fmt.Errorf("authorize: %s is not in iam.KnownActions", action)
	}
	p := principalFrom(ctx)
	if p == nil {
		return &model.Error{Status: http.StatusUnauthorized, Code: "MissingAuthenticationToken", Message: "the request is not authenticated"}
	}
	if p.User == model.RootUser {
		return nil
	}
	policies, err := a.policiesOf(ctx, p.User)
	if err != nil {
		return err
	}
	if iam.Evaluate(policies, action, resource) != iam.Allow {
		return &model.Error{Status: http.StatusForbidden, Code: "AccessDenied",
			Message: fmt.Sprintf("user %s is not authorized to perform %s on %s", p.User, action, resource)}
	}
	return nil
}

// policiesOf returns the parsed policies attached to user.
func (a *API) policiesOf(ctx context.Context, user string) ([]*iam.Policy, error) {
	return a.policies.UserPolicies(ctx, user)
}

// getObject reads and decodes one object.
func (a *API) getObject(ctx context.Context, kind, key string, v any) error {
	_, err := a.opts.Store.View(ctx, func(r store.Reader) error {
		return getInto(r, kind, key, v)
	})
	return err
}

func getInto(r store.Reader, kind, key string, v any) error {
	o, err := r.Get(kind, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(o.Value, v); err != nil {
		return fmt.Errorf("decode %s/%s: %w", kind, key, err)
	}
	return nil
}
