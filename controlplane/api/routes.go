package api

import (
	"fmt"
)

// routes registers every operation of the API; each kind of object has
// its file, with its routes and the rules of its writes.
func (a *API) routes() {
	a.secretRoutes()
	a.proxyRoutes()
	a.targetGroupRoutes()
	a.targetRoutes()
	a.endpointRoutes()
	a.userRoutes()
	a.policyRoutes()
	a.attachmentRoutes()
	a.accessKeyRoutes()
	a.operationRoutes()
}

// crud registers the four handlers of a collection.
func crud[T any](a *API, base, item string, k *kind[T]) {
	a.mux.HandleFunc("GET "+base, listHandler(a, k))
	a.mux.HandleFunc("GET "+base+"/"+item, getHandler(a, k))
	a.mux.HandleFunc("PUT "+base+"/"+item, putHandler(a, k))
	a.mux.HandleFunc("DELETE "+base+"/"+item, deleteHandler(a, k))
}

// orNotFound is err, or a 404 naming field when err is nil.
func orNotFound(err error, field, format string, args ...any) error {
	if err != nil {
		return err
	}
	e := errNotFound(fmt.Sprintf(format, args...))
	e.Field = field
	return e
}
