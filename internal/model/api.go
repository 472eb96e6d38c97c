package model

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// RevisionHeader carries the store revision of a backup.
const RevisionHeader = "X-Dbproxy-Revision"

// Error is an API error as clients see it: the "error" member of every
// response with a status of 400 or above.
type Error struct {
	// Status is the HTTP status of the response; it is not in the body.
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field is the JSON path of the (first) invalid field of the request.
	Field string `json:"field,omitempty"`
	// Fields lists every invalid field when there are several.
	Fields FieldErrors `json:"fields,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" && len(e.Fields) == 0 && !strings.HasPrefix(e.Message, e.Field+":") {
		return fmt.Sprintf("%s (%d): %s: %s", e.Code, e.Status, e.Field, e.Message)
	}
	return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message)
}

// IsNotFound reports whether err is a 404 of the API.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// Node is one data-plane node as the API reports it.
type Node struct {
	ID              string     `json:"id"`
	Zone            string     `json:"zone"`
	Address         string     `json:"address"`
	Connected       bool       `json:"connected"`
	ConnectedAt     *time.Time `json:"connected_at,omitempty"`
	LastSeen        *time.Time `json:"last_seen,omitempty"`
	CurrentVersion  string     `json:"current_version"`
	CurrentRevision uint64     `json:"current_revision"`
	AckedVersion    string     `json:"acked_version"`
	AckedRevision   uint64     `json:"acked_revision"`
	// BuildError is why the control plane cannot build the node's newest
	// configuration.
	BuildError string `json:"build_error,omitempty"`
	LastNack   *Nack  `json:"last_nack,omitempty"`
}

// Nack is a configuration a node rejected.
type Nack struct {
	Version string    `json:"version"`
	TypeURL string    `json:"type_url"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// Rollout is the answer of GET /v1/rollout.
type Rollout struct {
	Revision uint64   `json:"revision"`
	Zones    []string `json:"zones"`
	// Complete is true when every connected node of the zones acked a
	// configuration at or after Revision and each zone asked for by name
	// has a connected node.
	Complete bool `json:"complete"`
	// ZonesWithoutNodes are the zones asked for by name that have no
	// connected node.
	ZonesWithoutNodes []string `json:"zones_without_nodes,omitempty"`
	// Rejected is true when a node refused that configuration.
	Rejected bool   `json:"rejected"`
	Nodes    []Node `json:"nodes"`
	Message  string `json:"message,omitempty"`
}

// List is the answer of GET on a collection.
type List[T any] struct {
	Items    []T    `json:"items"`
	Revision uint64 `json:"revision,omitempty"`
}

// Deleted is the answer of a DELETE.
type Deleted struct {
	Deleted  string `json:"deleted"`
	Revision uint64 `json:"revision"`
}
