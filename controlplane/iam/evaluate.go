package iam

import "strconv"

// Decision is the outcome of an evaluation.
type Decision int

// Decisions, from weakest to strongest.
const (
	// DefaultDeny means no statement matched: the request is denied.
	DefaultDeny Decision = iota
	// Allow means an Allow statement matched and no Deny statement did.
	Allow
	// ExplicitDeny means a Deny statement matched.
	ExplicitDeny
)

// String returns the decision's name.
func (d Decision) String() string {
	switch d {
	case DefaultDeny:
		return "DefaultDeny"
	case Allow:
		return "Allow"
	case ExplicitDeny:
		return "ExplicitDeny"
	}
	return "Decision(" + strconv.Itoa(int(d)) + ")"
}

// Allowed reports whether d permits the request.
func (d Decision) Allowed() bool { return d == Allow }

// Actions dbproxy checks.
const (
	// ActionConnect lets a principal connect as a database user through a
	// proxy, on ProxyDBUserResource.
	ActionConnect = "dbproxy:Connect"
	// ActionReceiveConfig lets a data-plane node receive configuration
	// for a zone, on ZoneResource.
	ActionReceiveConfig = "dbproxy:ReceiveConfig"
)

// ProxyResource returns the resource path of a proxy.
func ProxyResource(proxy string) string { return "proxy/" + proxy }

// ProxyDBUserResource returns the resource path of a database user of a
// proxy, what ActionConnect is checked on.
func ProxyDBUserResource(proxy, dbUser string) string { return "proxy/" + proxy + "/dbuser/" + dbUser }

// ZoneResource returns the resource path of a zone, what
// ActionReceiveConfig is checked on.
func ZoneResource(zone string) string { return "zone/" + zone }

// SecretResource returns the resource path of a secret.
func SecretResource(name string) string { return "secret/" + name }

// UserResource returns the resource path of an IAM user.
func UserResource(name string) string { return "user/" + name }

// PolicyResource returns the resource path of a policy.
func PolicyResource(name string) string { return "policy/" + name }

// Evaluate decides action on resource under policies: default deny, any
// matching Allow allows, any matching Deny wins over everything. Actions
// match case-insensitively ("dbproxy:GetProxy" ~ "DBPROXY:getproxy"),
// resources case-sensitively; both support * (any run, including "/") and
// ? (one character). Nil policies are skipped; a statement whose Effect is
// neither "Allow" nor "Deny" (possible only when built by hand) counts as
// neither.
func Evaluate(policies []*Policy, action, resource string) Decision {
	d := DefaultDeny
	for _, p := range policies {
		if p == nil {
			continue
		}
		for i := range p.Statements {
			st := &p.Statements[i]
			if !st.matches(action, resource) {
				continue
			}
			switch st.Effect {
			case EffectDeny:
				return ExplicitDeny
			case EffectAllow:
				d = Allow
			}
		}
	}
	return d
}

// matches reports whether the statement applies to action on resource.
func (st *Statement) matches(action, resource string) bool {
	return applies(st.Actions, st.NotActions, action, true) &&
		applies(st.Resources, st.NotResources, resource, false)
}

// applies implements the Action/NotAction (Resource/NotResource) rule: a
// listed pattern matches, or a NotAction list is given and none matches.
func applies(patterns, notPatterns []string, s string, caseInsensitive bool) bool {
	if len(patterns) > 0 {
		return matchAny(patterns, s, caseInsensitive)
	}
	return len(notPatterns) > 0 && !matchAny(notPatterns, s, caseInsensitive)
}

func matchAny(patterns []string, s string, caseInsensitive bool) bool {
	for _, p := range patterns {
		if Match(p, s, caseInsensitive) {
			return true
		}
	}
	return false
}
