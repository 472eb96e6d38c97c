package xdsapi

// HealthReasonMetadataKey is the key of an HDS EndpointHealth's
// health_metadata that carries why a target is unhealthy (a string); see
// controlplane/health for the whole wire format.
const HealthReasonMetadataKey = "dbproxy.reason"

// MaxHealthReasonLen bounds a health reason in bytes: a node cuts what it
// sends, and the control plane what it keeps, whatever a node sends.
const MaxHealthReasonLen = 256

// TruncateHealthReason cuts s to at most MaxHealthReasonLen bytes without
// splitting a UTF-8 sequence.
func TruncateHealthReason(s string) string {
	n := MaxHealthReasonLen
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
