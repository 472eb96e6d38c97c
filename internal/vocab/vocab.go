// Package vocab holds the enumerated words of the resource model that the
// Terraform provider, the control plane's API and the data-plane nodes all
// speak: engine families, target roles, auth modes and pinning filters,
// and the rules on them that every layer applies alike (rules.go). The
// names mirror RDS Proxy's so that users can move over.
package vocab

// EngineMySQL is the one engine family (MySQL and MariaDB).
const EngineMySQL = "MYSQL"

// Target roles: as declared (AUTO discovers the role from read_only) and
// as discovered.
const (
	RoleAuto   = "AUTO"
	RoleWriter = "WRITER"
	RoleReader = "READER"
)

// Endpoint target roles.
const (
	TargetRoleReadWrite = "READ_WRITE"
	TargetRoleReadOnly  = "READ_ONLY"
)

// IAM auth modes of a proxy's auth block.
const (
	IAMAuthDisabled = "DISABLED"
	IAMAuthRequired = "REQUIRED"
)

// Client password auth types.
const (
	AuthNativePassword      = "MYSQL_NATIVE_PASSWORD"
	AuthCachingSHA2Password = "MYSQL_CACHING_SHA2_PASSWORD"
)

// PinningFilterExcludeVariableSets is the one session pinning filter: SET
// of a session variable does not pin the client to its connection.
const PinningFilterExcludeVariableSets = "EXCLUDE_VARIABLE_SETS"
