package iam

import "strings"

// KnownActions returns every action dbproxy checks, in the spelling of the
// docs: what a policy's Action and NotAction may name, or match with a
// wildcard. It is a function so that no caller can change the list.
func KnownActions() []string {
	out := []string{ActionConnect, ActionReceiveConfig,
		"dbproxy:ListNodes", "dbproxy:GetRollout", "dbproxy:GetStatus", "dbproxy:GetBackup"}
	for _, noun := range []string{"Secret", "Proxy", "TargetGroup", "Target", "Endpoint", "User", "AccessKey", "Policy", "UserPolicyAttachment"} {
		out = append(out, "dbproxy:Get"+noun, "dbproxy:Put"+noun, "dbproxy:Delete"+noun)
	}
	for _, plural := range []string{"Secrets", "Proxies", "Targets", "Endpoints", "Users", "AccessKeys", "Policies", "UserPolicyAttachments"} {
		out = append(out, "dbproxy:List"+plural)
	}
	return out
}

// KnownAction reports whether action is one that dbproxy checks
// (case-insensitively, as actions match).
func KnownAction(action string) bool {
	for _, a := range KnownActions() {
		if strings.EqualFold(a, action) {
			return true
		}
	}
	return false
}

// matchesKnown reports whether an action pattern with wildcards matches
// at least one known action.
func matchesKnown(pattern string) bool {
	for _, a := range KnownActions() {
		if Match(pattern, a, true) {
			return true
		}
	}
	return false
}
