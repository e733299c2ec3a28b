// Package policy decides whether a caller may perform an action on a
// resource. It is pure: no storage, no clock, no network; the server hands it
// everything it needs in a Request.
//
// A policy is a YAML document of statements. A statement has an effect
// (allow or deny), the actions it covers (names from the catalogue, with
// globs such as "kms:*"), the resources it covers (key ids, alias/NAME,
// secret/PATH, ...; globs), optionally the principals it applies to, and
// conditions (encryption context, source address, time). For example:
//
//	statements:
//	  - sid: DecryptOwnNamespace
//	    effect: allow
//	    actions: [kms:Decrypt, kms:GenerateDataKey]
//	    resources: ["alias/app-*"]
//	    conditions:
//	      StringEquals:
//	        context.namespace: ${principal.namespace}
//
// lets a pod decrypt only data whose encryption context names its own
// namespace. Evaluation denies by default, and any matching deny wins over
// every allow.
//
// Use Parse to read and validate a document (errors point at the line),
// NewSet to compile the policies attached to one identity (or one key) for
// fast evaluation, Set.Evaluate to decide a request against one set, and
// Authorize to combine identity policies with a key policy. Lint finds
// statements that grant more than they probably should or can never apply.
// The format and the rules are described in docs/policy.md.
package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Effect is allow or deny.
type Effect bool

// Effects.
const (
	Deny  Effect = false
	Allow Effect = true
)

// String returns "allow" or "deny".
func (e Effect) String() string {
	if e == Allow {
		return "allow"
	}
	return "deny"
}

// Policy is one parsed, validated policy document.
type Policy struct {
	// Name identifies the policy in decisions (a file name, or the stored
	// policy's name).
	Name        string
	Description string
	Statements  []*Statement
}

// Statement is one statement of a policy. Its fields are as written; the
// compiled matchers are private.
type Statement struct {
	Sid        string
	Effect     Effect
	Actions    []string
	Resources  []string
	Principals []string // empty: every principal the policy is attached to
	Conditions []Condition
	// Line is the line of the statement in the document.
	Line int

	ref        StatementRef
	actions    actionSet
	resources  []*glob
	principals []principalPattern
	conds      []cond
}

// Condition is one operator-key-values triple of a statement.
type Condition struct {
	Operator string   // StringEquals, IpAddress, ...
	Key      string   // context.NAME, principal.FIELD, source_ip, time
	Values   []string // any of them matches
	Line     int
}

// Principal is the authenticated caller, as the policy engine sees it.
type Principal struct {
	// ID names the principal within its kind: an access key id, a token
	// accessor, a role session name.
	ID string
	// Kind is "role" (a temporary token of a role), "access-key", "token"
	// or "root".
	Kind string
	// Role is the role the caller acts in, if any.
	Role string
	// Namespace and ServiceAccount are set for a Kubernetes workload.
	Namespace      string
	ServiceAccount string
	// Attributes are further claims (cluster, team, ...), addressed as
	// principal.attr.NAME.
	Attributes map[string]string
}

// String returns KIND:ID.
func (p Principal) String() string { return p.Kind + ":" + p.ID }

// Request is one authorization question.
type Request struct {
	Principal Principal
	Action    string
	// Resource is the resource as the caller named it: a key id,
	// alias/NAME, secret/PATH, a token accessor, role/NAME, ... Empty for
	// actions on no one resource.
	Resource string
	// Aliases are other names of the same resource: for a key, its id and
	// all its aliases (alias/NAME), whichever the caller used. A resource
	// pattern matches if it matches Resource or any alias.
	Aliases []string
	// Context is the encryption context of the request.
	Context map[string]string
	// SourceIP is the caller's address; the zero value is unknown.
	SourceIP netip.Addr
	// Time is the time of the request; the zero value fails every time
	// condition.
	Time time.Time
}

// StatementRef names the statement that decided.
type StatementRef struct {
	Policy string // the policy's name
	Index  int    // 0-based position in the policy
	Sid    string
	Line   int
	Effect Effect
}

// String returns "NAME:LINE statement N (SID)".
func (r *StatementRef) String() string {
	s := r.Policy + ":" + strconv.Itoa(r.Line) + " statement " + strconv.Itoa(r.Index+1)
	if r.Sid != "" {
		s += " (" + r.Sid + ")"
	}
	return s
}

// Decision is the answer to a Request.
type Decision struct {
	Allowed bool
	// Statement is the statement that decided: the deny that matched, or
	// the allow that granted. Nil when nothing matched (default deny).
	Statement *StatementRef
	// KeyStatement is, for an allow under a key policy, the key policy's
	// allow statement.
	KeyStatement *StatementRef
	// Reason is one of the Reason* constants.
	Reason string
}

// Reasons of decisions. They are constants so a decision allocates nothing.
const (
	ReasonAllowed       = "allowed"
	ReasonExplicitDeny  = "explicitly denied"
	ReasonDefaultDeny   = "no statement allows it (default deny)"
	ReasonKeyPolicy     = "the key policy does not allow it"
	ReasonUnknownAction = "unknown action"
)

// String describes the decision in one line, naming the statement.
func (d Decision) String() string {
	switch {
	case d.Allowed && d.KeyStatement != nil:
		return fmt.Sprintf("allow: %s and key policy %s", d.Statement, d.KeyStatement)
	case d.Allowed:
		return "allow: " + d.Statement.String()
	case d.Statement != nil:
		return "deny: " + d.Reason + " by " + d.Statement.String()
	}
	return "deny: " + d.Reason
}
