// Package xdsapi is the contract between the control plane's xDS translator
// and the data-plane node's decoder: resource names, metadata keys, the
// node identity on the wire, and the JSON payloads that ride inside Envoy
// resources (the listener's typed config, the cluster's pool metadata and
// each endpoint's target metadata). Both sides import it so that a name or
// a field is spelled in exactly one place.
package xdsapi

import (
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// NumResourceTypes is how many resource types a dbproxy resource set has.
const NumResourceTypes = 4

// ResourceTypes returns the type URLs of a dbproxy resource set, in the
// order the translator hashes them into the version and a node subscribes
// to and applies them.
func ResourceTypes() [NumResourceTypes]string {
	return [NumResourceTypes]string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.SecretType}
}

// IsResourceType reports whether typeURL is one of ResourceTypes.
func IsResourceType(typeURL string) bool {
	for _, t := range ResourceTypes() {
		if t == typeURL {
			return true
		}
	}
	return false
}

// ListenerFilterName is the name of the one network filter of every
// dbproxy listener.
const ListenerFilterName = "dbproxy.mysql_proxy"

// ListenerConfigTypeURL is the type_url of the xds.type.v3.TypedStruct that
// carries a ListenerConfig in the listener filter's typed_config.
const ListenerConfigTypeURL = "type.dbproxy.io/dbproxy.v1.MySQLProxy"

// Filter metadata keys.
const (
	// PoolMetadataKey holds a cluster's PoolConfig in
	// metadata.filter_metadata.
	PoolMetadataKey = "dbproxy.pool"
	// TargetMetadataKey holds an LbEndpoint's TargetMetadata in
	// metadata.filter_metadata.
	TargetMetadataKey = "dbproxy.target"
)

// Secret names and keys.
const (
	// NodeTLSSecret is the name of the Secret with the node's server
	// certificate and key (a TlsCertificate).
	NodeTLSSecret = "tls/node"
	// DBSecretPrefix starts the names of database credential Secrets.
	DBSecretPrefix = "db/"
	// SecretUsernameKey and SecretPasswordKey are the keys of a database
	// credential's GenericSecret.secrets map.
	SecretUsernameKey = "username"
	SecretPasswordKey = "password"
)

// ConnectKeysSecret is the name of the GenericSecret with what a node
// verifies connect tokens with; its ConnectKeysKey entry holds the JSON of
// ConnectKeys.
const (
	ConnectKeysSecret = "iam/connect"
	ConnectKeysKey    = "connect_keys"
)

// ConnectKeys is what a node needs to verify connect tokens offline: for
// each access key allowed to connect through one of the node's proxies,
// its date-scoped signing keys (never the secret access key) and what it
// may connect as. The control plane evaluates the policies; the node only
// looks the grant up.
type ConnectKeys struct {
	// Region is the region tokens must be signed for.
	Region string       `json:"region"`
	Keys   []ConnectKey `json:"keys"`
}

// ConnectKey is one access key allowed dbproxy:Connect.
type ConnectKey struct {
	AccessKeyID string `json:"access_key_id"`
	// User is the IAM user the key belongs to (for logs).
	User string `json:"user"`
	// SigningKeys maps a credential-scope date (20060102) to the hex of
	// the key's SigV4 signing key for that date, the region and service
	// rds-db.
	SigningKeys map[string]string `json:"signing_keys"`
	// Allow lists what the key may connect as, sorted.
	Allow []ConnectGrant `json:"allow"`
}

// ConnectGrant allows connecting through a proxy as a database user.
type ConnectGrant struct {
	Proxy  string `json:"proxy"`
	DBUser string `json:"db_user"`
}

// DBSecretName returns the xDS Secret name of the model's database secret.
func DBSecretName(secret string) string { return DBSecretPrefix + secret }

// SecretFromDBSecretName returns the model's secret name of an xDS Secret
// name made by DBSecretName, and false for any other name.
func SecretFromDBSecretName(name string) (string, bool) {
	s, ok := strings.CutPrefix(name, DBSecretPrefix)
	if !ok || s == "" {
		return "", false
	}
	return s, true
}

// DefaultEndpoint is the name of the READ_WRITE endpoint every proxy has.
const DefaultEndpoint = "default"

// ListenerName returns the name of the listener of a proxy's endpoint
// ("<proxy>/<endpoint>").
func ListenerName(proxy, endpoint string) string { return proxy + "/" + endpoint }

// ListenerConfig is the proxy configuration one listener carries. The
// proxy-wide fields (auth, TLS, timeouts, cluster) are the same in every
// listener of a proxy.
type ListenerConfig struct {
	Proxy    string `json:"proxy"`
	Endpoint string `json:"endpoint"`
	// TargetRole is READ_WRITE or READ_ONLY.
	TargetRole string `json:"target_role"`
	// Cluster names the Cluster (and ClusterLoadAssignment) of the
	// proxy's targets.
	Cluster              string       `json:"cluster"`
	Auth                 []AuthConfig `json:"auth"`
	RequireTLS           bool         `json:"require_tls"`
	IdleClientTimeoutSec int          `json:"idle_client_timeout_seconds"`
	MaxClientConnections int          `json:"max_client_connections"`
	DebugLogging         bool         `json:"debug_logging"`
	// TLSSecret is NodeTLSSecret when the control plane pushes the node's
	// certificate, and empty otherwise.
	TLSSecret string `json:"tls_secret,omitempty"`
	// ConnectSecret is ConnectKeysSecret when an auth block requires IAM
	// authentication (connect tokens), and empty otherwise.
	ConnectSecret string `json:"connect_secret,omitempty"`
}

// SecretNames returns the xDS Secret names the listener needs, in auth
// order followed by the TLS and the connect-keys secrets.
func (c ListenerConfig) SecretNames() []string {
	names := make([]string, 0, len(c.Auth)+1)
	for _, a := range c.Auth {
		names = append(names, DBSecretName(a.Secret))
	}
	if c.TLSSecret != "" {
		names = append(names, c.TLSSecret)
	}
	if c.ConnectSecret != "" {
		names = append(names, c.ConnectSecret)
	}
	return names
}

// AuthConfig lets the users of one database secret connect.
type AuthConfig struct {
	// Secret is the model's secret name; the resource is
	// DBSecretName(Secret).
	Secret                 string `json:"secret"`
	IAMAuth                string `json:"iam_auth"`
	ClientPasswordAuthType string `json:"client_password_auth_type"`
}

// PoolConfig is a cluster's connection pool settings. Timeouts are whole
// seconds, as in the model.
type PoolConfig struct {
	MaxConnectionsPercent      int      `json:"max_connections_percent"`
	MaxIdleConnectionsPercent  int      `json:"max_idle_connections_percent"`
	ConnectionBorrowTimeoutSec int      `json:"connection_borrow_timeout_seconds"`
	InitQuery                  string   `json:"init_query"`
	SessionPinningFilters      []string `json:"session_pinning_filters"`
}

// TargetMetadata names one LbEndpoint's database target and its declared
// role (AUTO, WRITER or READER).
type TargetMetadata struct {
	Name string `json:"name"`
	Role string `json:"role"`
}
