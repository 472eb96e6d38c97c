// Package model defines the resource model: the desired-state objects that
// Terraform resources declare, the admin API serves and the xDS translator
// turns into node configuration, with their defaults and validation, and
// the admin API's other wire types (errors, nodes, rollouts, list and
// delete answers). It holds types and rules only and imports nothing of
// the control plane's server side, so that the API client and the
// Terraform provider share it without linking the store; storage and
// transport live elsewhere.
package model

import (
	"time"
)

// Kinds of stored objects. A kind is also the store bucket and the last
// path element of the API collection.
const (
	KindSecret      = "secrets"
	KindProxy       = "proxies"
	KindTargetGroup = "target_groups"
	KindTarget      = "targets"
	KindEndpoint    = "endpoints"
	KindUser        = "users"
	KindAccessKey   = "access_keys"
	KindPolicy      = "policies"
	KindAttachment  = "attachments"
)

// Kinds lists every kind, in the order a full snapshot is read.
var Kinds = []string{KindSecret, KindProxy, KindTargetGroup, KindTarget, KindEndpoint, KindUser, KindAccessKey, KindPolicy, KindAttachment}

// SensitiveKinds are the kinds whose stored values carry secrets and are
// encrypted at rest.
var SensitiveKinds = []string{KindSecret, KindAccessKey}

// RootUser is the user the root access key belongs to. It is allowed
// every admin action and cannot be deleted.
const RootUser = "root"

// Access key states.
const (
	KeyActive   = "Active"
	KeyInactive = "Inactive"
)

// DefaultTargetGroup is the name of a proxy's one target group.
const DefaultTargetGroup = "default"

// DefaultEndpoint is the name of the READ_WRITE endpoint every proxy has.
const DefaultEndpoint = "default"

// Meta is what the store records about every object. Revision is the store
// revision of the object's last change and is the value to send in If-Match
// for an optimistic update.
type Meta struct {
	Revision  uint64    `json:"revision"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Secret holds database credentials. Password is write-only: the API
// accepts it and never returns it.
type Secret struct {
	Name            string `json:"name"`
	Description     string `json:"description,omitempty"`
	Username        string `json:"username"`
	Password        string `json:"password,omitempty"`
	PasswordVersion int64  `json:"password_version"`
	Meta
}

// Proxy is one proxy. Port 0 asks the control plane to allocate one; the
// proxy's default READ_WRITE endpoint listens there on every node of its
// zones. Endpoint and Addresses are computed.
//
// A field whose range starts at 1 (IdleClientTimeout here,
// MaxConnectionsPercent and Target.Port elsewhere) is left out of the JSON
// when it is 0, which stands for its default: the API refuses a 0 that is
// sent, so a client that never set the field must not send one.
type Proxy struct {
	Name                 string   `json:"name"`
	EngineFamily         string   `json:"engine_family"`
	Zones                []string `json:"zones"`
	Auth                 []Auth   `json:"auth"`
	RequireTLS           bool     `json:"require_tls"`
	IdleClientTimeout    int      `json:"idle_client_timeout,omitempty"`
	MaxClientConnections int      `json:"max_client_connections"`
	DebugLogging         bool     `json:"debug_logging"`
	Port                 int      `json:"port"`
	Endpoint             string   `json:"endpoint,omitempty"`
	Addresses            []string `json:"addresses,omitempty"`
	Meta
}

// Auth lets the users of one secret connect to a proxy.
type Auth struct {
	Secret                 string `json:"secret"`
	IAMAuth                string `json:"iam_auth"`
	ClientPasswordAuthType string `json:"client_password_auth_type"`
	Description            string `json:"description,omitempty"`
}

// TargetGroup holds the pool settings of a proxy's default target group.
type TargetGroup struct {
	Proxy                string     `json:"proxy"`
	Name                 string     `json:"name"`
	ConnectionPoolConfig PoolConfig `json:"connection_pool_config"`
	Meta
}

// PoolConfig mirrors RDS Proxy's connection_pool_config. Timeouts are whole
// seconds, as in the AWS API.
type PoolConfig struct {
	MaxConnectionsPercent     int      `json:"max_connections_percent,omitempty"`
	MaxIdleConnectionsPercent int      `json:"max_idle_connections_percent"`
	ConnectionBorrowTimeout   int      `json:"connection_borrow_timeout"`
	InitQuery                 string   `json:"init_query"`
	SessionPinningFilters     []string `json:"session_pinning_filters"`
}

// Target is one database server behind a proxy. Health and DiscoveredRole
// are computed from what nodes report.
type Target struct {
	Proxy          string `json:"proxy"`
	Name           string `json:"name"`
	Host           string `json:"host"`
	Port           int    `json:"port,omitempty"`
	Zone           string `json:"zone"`
	Role           string `json:"role"`
	Health         string `json:"health,omitempty"`
	DiscoveredRole string `json:"discovered_role,omitempty"`
	// HealthReason says why nodes find the target unhealthy, node by
	// node ("" when every report is healthy).
	HealthReason string `json:"health_reason,omitempty"`
	Meta
}

// Endpoint is an extra endpoint of a proxy. Zones defaults to the proxy's
// zones; Port 0 asks for an allocated port.
type Endpoint struct {
	Proxy      string   `json:"proxy"`
	Name       string   `json:"name"`
	TargetRole string   `json:"target_role"`
	Zones      []string `json:"zones"`
	Port       int      `json:"port"`
	Endpoint   string   `json:"endpoint,omitempty"`
	Addresses  []string `json:"addresses,omitempty"`
	Meta
}

// User is an IAM-style identity.
type User struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Meta
}

// AccessKey is a user's key pair. SecretAccessKey is returned once, by the
// call that creates the key.
type AccessKey struct {
	ID              string `json:"access_key_id"`
	User            string `json:"user"`
	Status          string `json:"status"`
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	Meta
}

// Policy is a named IAM JSON policy document.
type Policy struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Document    string `json:"policy"`
	Meta
}

// Attachment attaches a policy to a user.
type Attachment struct {
	User   string `json:"user"`
	Policy string `json:"policy_name"`
	Meta
}

// State is the whole desired state at one store revision, the input of the
// xDS translator.
type State struct {
	Revision     uint64
	Secrets      []Secret
	Proxies      []Proxy
	TargetGroups []TargetGroup
	Targets      []Target
	Endpoints    []Endpoint
	Users        []User
	AccessKeys   []AccessKey
	Policies     []Policy
	Attachments  []Attachment
}
