// Package iam is dbproxy's IAM policy engine: it parses IAM JSON policy
// documents and decides whether a principal's policies allow an action on
// a resource.
//
// Documents use the IAM grammar's core: "Version" (required, "2012-10-17"),
// "Id" (optional) and "Statement" (one object or an array), each statement
// with "Effect" ("Allow" or "Deny"), exactly one of "Action" and
// "NotAction", exactly one of "Resource" and "NotResource" (a string or an
// array of strings) and an optional "Sid". Every other element, notably
// "Condition" and "Principal", is rejected rather than ignored: a condition
// that silently did not apply would grant more than its author meant.
//
// Actions are "dbproxy:<Name>" or "*": dbproxy:Connect (on
// proxy/<proxy>/dbuser/<user>), dbproxy:ReceiveConfig (on zone/<zone>, for
// data-plane nodes) and the admin actions dbproxy:Get*, dbproxy:Put*,
// dbproxy:Delete* and dbproxy:List* (KnownActions lists them). They match
// case-insensitively. A name that is no known action, or a wildcard that
// matches none, is an error: a typo in an Action would grant nothing, and
// in a NotAction or a Deny it would grant more than its author meant.
//
// A document holds at most MaxStatements statements and MaxDocumentSize
// bytes, so that evaluating a user's policies stays cheap (a user holds a
// bounded number of them; the API caps attachments).
//
// Resources are plain paths, not ARNs, and match case-sensitively:
// proxy/<name>, proxy/<proxy>/dbuser/<user>, zone/<zone>, secret/<name>,
// user/<name>, policy/<name>, or "*". An ARN-like "arn:..." resource is an
// error, so that a policy copied from AWS fails loudly instead of never
// matching.
//
// In both, "*" matches any run of characters (including "/") and "?"
// exactly one character. Evaluation follows IAM: deny by default, any
// matching Allow statement allows, and any matching Deny statement wins
// over everything.
package iam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Version is the only policy language version accepted.
const Version = "2012-10-17"

// Statement effects.
const (
	EffectAllow = "Allow"
	EffectDeny  = "Deny"
)

// MaxDocumentSize is the largest policy document ParsePolicy accepts, in
// bytes: AWS IAM's limit for a managed policy, 6,144 characters (AWS does
// not count white space; this counts every byte, which is stricter).
const MaxDocumentSize = 6144

// MaxStatements is the most statements ParsePolicy accepts in a document.
// AWS has no such limit besides the size, which allows about 130 of the
// smallest statements; 100 keeps the cost of evaluating a policy bounded
// by the statement count rather than by how tersely it is written.
const MaxStatements = 100

// Policy is a parsed IAM JSON policy document.
type Policy struct {
	// Version is the document's "Version", empty when it had none.
	Version string
	// ID is the document's optional "Id".
	ID string
	// Statements are the document's statements in order.
	Statements []Statement
}

// Statement is one statement of a policy. Exactly one of Actions and
// NotActions, and one of Resources and NotResources, is non-empty.
type Statement struct {
	Sid          string
	Effect       string
	Actions      []string
	NotActions   []string
	Resources    []string
	NotResources []string
}

// FieldError is a policy document error; Field names the element, for
// example "Statement[1].Effect".
type FieldError struct {
	Field   string
	Message string
}

// Error returns "Field: Message".
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// ErrInvalidPolicy is wrapped by every error ParsePolicy returns.
var ErrInvalidPolicy = errors.New("invalid policy document")

// Is makes a FieldError match ErrInvalidPolicy.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidPolicy }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ParsePolicy parses an IAM JSON policy document: "Version" ("2012-10-17",
// required), "Statement" (object or array, at most MaxStatements), each
// with "Effect" (Allow|Deny), "Action"/"NotAction" (known actions, see
// KnownActions) and "Resource"/"NotResource" as string or array of
// strings, optional "Sid". Unknown keys (e.g. "Condition", "Principal")
// and repeated keys are errors. Errors are *FieldError values naming the
// field, e.g. `Statement[1].Effect: must be "Allow" or "Deny"`, and match
// ErrInvalidPolicy.
func ParsePolicy(doc string) (*Policy, error) {
	return parse(doc, true)
}

// ParseStoredPolicy parses a document that ParsePolicy accepted when it was
// written, perhaps under older rules: it accepts what those rules did and
// the present ones do not (no Version, action names that are no known
// action, more than MaxStatements statements, up to 128 KiB), so that
// stored policies keep granting what they granted when an upgrade makes
// the rules stricter. An unknown action matches nothing, as before.
func ParseStoredPolicy(doc string) (*Policy, error) {
	return parse(doc, false)
}

// storedDocumentSize is the size limit of documents written before
// MaxDocumentSize.
const storedDocumentSize = 128 << 10

func parse(doc string, strict bool) (*Policy, error) {
	maxSize := MaxDocumentSize
	if !strict {
		maxSize = storedDocumentSize
	}
	if len(doc) > maxSize {
		return nil, fieldErr("", "policy document is %d bytes, more than %d", len(doc), maxSize)
	}
	if strings.TrimSpace(doc) == "" {
		return nil, fieldErr("", "policy document is empty")
	}
	members, err := object([]byte(doc), "")
	if err != nil {
		return nil, err
	}
	p := &Policy{}
	var sawStatement bool
	for _, m := range members {
		switch m.key {
		case "Version":
			v, err := str(m.value, "Version")
			if err != nil {
				return nil, err
			}
			if v != Version {
				return nil, fieldErr("Version", "must be %q", Version)
			}
			p.Version = v
		case "Id":
			v, err := str(m.value, "Id")
			if err != nil {
				return nil, err
			}
			p.ID = v
		case "Statement":
			sawStatement = true
			if p.Statements, err = statements(m.value, strict); err != nil {
				return nil, err
			}
		default:
			return nil, fieldErr(m.key, "unknown element (allowed: Version, Id, Statement)")
		}
	}
	if !sawStatement {
		return nil, fieldErr("Statement", "is required")
	}
	// Checked last, so that a document with other errors too is told of
	// those first: they are what its author got wrong, Version is a line
	// to add.
	if strict && p.Version == "" {
		return nil, fieldErr("Version", "is required; add \"Version\": %q", Version)
	}
	return p, nil
}

func statements(raw json.RawMessage, strict bool) ([]Statement, error) {
	switch firstByte(raw) {
	case '{':
		st, err := statement(raw, "Statement", strict)
		if err != nil {
			return nil, err
		}
		return []Statement{st}, nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fieldErr("Statement", "must be an object or an array of objects")
		}
		if len(items) == 0 {
			return nil, fieldErr("Statement", "must not be empty")
		}
		if strict && len(items) > MaxStatements {
			return nil, fieldErr("Statement", "has %d statements, more than %d; split the policy", len(items), MaxStatements)
		}
		out := make([]Statement, 0, len(items))
		for i, item := range items {
			st, err := statement(item, fmt.Sprintf("Statement[%d]", i), strict)
			if err != nil {
				return nil, err
			}
			out = append(out, st)
		}
		return out, nil
	}
	return nil, fieldErr("Statement", "must be an object or an array of objects")
}

func statement(raw json.RawMessage, field string, strict bool) (Statement, error) {
	validAction := func(a string) string { return validAction(a, strict) }
	var st Statement
	members, err := object(raw, field)
	if err != nil {
		return st, err
	}
	var sawEffect bool
	for _, m := range members {
		name := field + "." + m.key
		switch m.key {
		case "Sid":
			if st.Sid, err = str(m.value, name); err != nil {
				return st, err
			}
		case "Effect":
			sawEffect = true
			if st.Effect, err = str(m.value, name); err != nil {
				return st, err
			}
			if st.Effect != EffectAllow && st.Effect != EffectDeny {
				return st, fieldErr(name, "must be %q or %q", EffectAllow, EffectDeny)
			}
		case "Action":
			st.Actions, err = strList(m.value, name, validAction)
		case "NotAction":
			st.NotActions, err = strList(m.value, name, validAction)
		case "Resource":
			st.Resources, err = strList(m.value, name, validResource)
		case "NotResource":
			st.NotResources, err = strList(m.value, name, validResource)
		default:
			return st, fieldErr(name, "unknown element (allowed: Sid, Effect, Action, NotAction, Resource, NotResource)")
		}
		if err != nil {
			return st, err
		}
	}
	if !sawEffect {
		return st, fieldErr(field+".Effect", "is required")
	}
	switch {
	case st.Actions == nil && st.NotActions == nil:
		return st, fieldErr(field+".Action", "one of Action and NotAction is required")
	case st.Actions != nil && st.NotActions != nil:
		return st, fieldErr(field+".NotAction", "only one of Action and NotAction may be given")
	case st.Resources == nil && st.NotResources == nil:
		return st, fieldErr(field+".Resource", "one of Resource and NotResource is required")
	case st.Resources != nil && st.NotResources != nil:
		return st, fieldErr(field+".NotResource", "only one of Resource and NotResource may be given")
	}
	return st, nil
}

// validAction accepts "*" and "dbproxy:<name>" where name is letters,
// digits and wildcards and, when strict, names a known action or matches
// one.
func validAction(a string, strict bool) string {
	if a == "*" {
		return ""
	}
	service, name, ok := strings.Cut(a, ":")
	if !ok || !strings.EqualFold(service, "dbproxy") {
		return `must be "*" or "dbproxy:<Action>"`
	}
	if name == "" {
		return "action name is empty"
	}
	for _, r := range name {
		if !(r == '*' || r == '?' || (r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)))) {
			return "action name may contain only letters, digits, * and ?"
		}
	}
	switch {
	case !strict:
	case strings.ContainsAny(name, "*?"):
		if !matchesKnown(a) {
			return "matches no dbproxy action (see the list of actions in the docs)"
		}
	case !KnownAction(a):
		return "is not a dbproxy action (see the list of actions in the docs)"
	}
	return ""
}

// validResource accepts plain resource paths with wildcards.
func validResource(r string) string {
	switch {
	case len(r) >= 4 && strings.EqualFold(r[:4], "arn:"):
		return "resources are plain paths like proxy/<name>, not ARNs"
	case strings.HasPrefix(r, "/"):
		return "resources are paths like proxy/<name> without a leading /"
	case !utf8.ValidString(r):
		return "must be valid UTF-8"
	}
	for _, c := range r {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return "must not contain spaces or control characters"
		}
	}
	return ""
}

func strList(raw json.RawMessage, field string, valid func(string) string) ([]string, error) {
	var items []string
	switch firstByte(raw) {
	case '"':
		s, err := str(raw, field)
		if err != nil {
			return nil, err
		}
		items = []string{s}
	case '[':
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			return nil, fieldErr(field, "must be a string or an array of strings")
		}
		if len(elems) == 0 {
			return nil, fieldErr(field, "must not be empty")
		}
		for i, e := range elems {
			s, err := str(e, fmt.Sprintf("%s[%d]", field, i))
			if err != nil {
				return nil, err
			}
			items = append(items, s)
		}
	default:
		return nil, fieldErr(field, "must be a string or an array of strings")
	}
	for i, s := range items {
		name := field
		if firstByte(raw) == '[' {
			name = fmt.Sprintf("%s[%d]", field, i)
		}
		if s == "" {
			return nil, fieldErr(name, "must not be empty")
		}
		if msg := valid(s); msg != "" {
			return nil, fieldErr(name, "%q: %s", s, msg)
		}
	}
	return items, nil
}

func str(raw json.RawMessage, field string) (string, error) {
	var s string
	if firstByte(raw) != '"' || json.Unmarshal(raw, &s) != nil {
		return "", fieldErr(field, "must be a string")
	}
	return s, nil
}

func firstByte(raw json.RawMessage) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

type member struct {
	key   string
	value json.RawMessage
}

// object decodes a JSON object into its members in order, rejecting
// repeated keys (encoding/json would silently keep the last) and trailing
// data.
func object(raw []byte, field string) ([]member, error) {
	notObject := func() error {
		if field == "" {
			return fieldErr("", "policy document must be a JSON object")
		}
		return fieldErr(field, "must be an object")
	}
	if firstByte(raw) != '{' {
		return nil, notObject()
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	syntax := func(err error) error {
		return fieldErr(field, "invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != nil {
		return nil, syntax(err)
	}
	var out []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntax(err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, syntax(errors.New("object key is not a string"))
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, syntax(err)
		}
		name := key
		if field != "" {
			name = field + "." + key
		}
		if seen[key] {
			return nil, fieldErr(name, "appears more than once")
		}
		seen[key] = true
		out = append(out, member{key: key, value: value})
	}
	if _, err := dec.Token(); err != nil {
		return nil, syntax(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, syntax(errors.New("data after the top-level object"))
	}
	return out, nil
}

// MarshalJSON encodes the policy as an IAM JSON document that ParsePolicy
// reads back to an equal Policy.
func (p *Policy) MarshalJSON() ([]byte, error) {
	type stmt struct {
		Sid         string   `json:"Sid,omitempty"`
		Effect      string   `json:"Effect"`
		Action      []string `json:"Action,omitempty"`
		NotAction   []string `json:"NotAction,omitempty"`
		Resource    []string `json:"Resource,omitempty"`
		NotResource []string `json:"NotResource,omitempty"`
	}
	doc := struct {
		Version   string `json:"Version,omitempty"`
		ID        string `json:"Id,omitempty"`
		Statement []stmt `json:"Statement"`
	}{Version: p.Version, ID: p.ID, Statement: []stmt{}}
	for _, s := range p.Statements {
		doc.Statement = append(doc.Statement, stmt{
			Sid: s.Sid, Effect: s.Effect,
			Action: s.Actions, NotAction: s.NotActions,
			Resource: s.Resources, NotResource: s.NotResources,
		})
	}
	return json.Marshal(doc)
}
