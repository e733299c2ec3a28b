package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Warning is a lint finding: the policy is valid but probably not what its
// author meant, or grants more than least privilege needs.
type Warning struct {
	Code      string // one of the Lint* constants
	Policy    string
	Line      int
	Statement int // 1-based
	Sid       string
	Message   string
}

// String returns "POLICY:LINE: statement N (SID): CODE: MESSAGE".
func (w Warning) String() string {
	s := w.Policy + ":" + strconv.Itoa(w.Line) + ": statement " + strconv.Itoa(w.Statement)
	if w.Sid != "" {
		s += " (" + w.Sid + ")"
	}
	return s + ": " + w.Code + ": " + w.Message
}

// Lint codes.
const (
	LintWildcardAction    = "wildcard-action"
	LintWildcardResource  = "wildcard-resource"
	LintUnconditionedRead = "unconditioned-read"
	LintShadowed          = "shadowed"
	LintRedundant         = "redundant"
	LintNeverMatches      = "never-matches"
	LintUnusedAction      = "unused-action"
	LintExpired           = "expired"
	LintSelfUpdate        = "self-update"
	LintGrantsPolicies    = "grants-policies"
)

// Lint returns the warnings of p at the current time.
func Lint(p *Policy) []Warning { return LintAt(p, time.Now()) }

// LintAt returns the warnings of p, judging time conditions at now:
//
//   - wildcard-action: an allow names actions by a glob (kms:*, *);
//   - wildcard-resource: an allow covers every resource (*);
//   - unconditioned-read: an allow of an action that discloses plaintext or
//     key material (kms:Decrypt, kms:GenerateDataKey, secret:Read, ...) has
//     no condition;
//   - never-matches: no action of the statement can meet its resources
//     (sys:Seal on alias/app), a context condition on actions without an
//     encryption context, or an empty time window;
//   - unused-action: some actions of a statement can never meet its
//     resources;
//   - shadowed: an unconditional deny of the same policy covers an allow,
//     which therefore never grants anything;
//   - redundant: an earlier unconditional allow already covers an allow;
//   - expired: a DateLessThan lies in the past;
//   - self-update: an allow of accesskey:Update covers the caller's own
//     access key (*, cfak_*, ${principal.id}): the key can change its own
//     policies (the server refuses a policy the caller does not hold, but
//     it can still re-enable itself or swap policies it holds for others it
//     holds through a role it assumed);
//   - grants-policies: an allow of an action that attaches or writes stored
//     policies (accesskey:Create, accesskey:Update, role:Create,
//     role:Update, policy:Write): its holder can hand out rights, so it is
//     worth as much as the strongest policy it can attach.
//
// Statements allowing every action ("*") get only wildcard-action.
func LintAt(p *Policy, now time.Time) []Warning {
	var ws []Warning
	for i, st := range p.Statements {
		add := func(code, format string, args ...any) {
			ws = append(ws, Warning{Code: code, Policy: p.Name, Line: st.Line, Statement: i + 1, Sid: st.Sid,
				Message: fmt.Sprintf(format, args...)})
		}
		lintStatement(p, i, st, now, add)
	}
	return ws
}

func lintStatement(p *Policy, i int, st *Statement, now time.Time, add func(code, format string, args ...any)) {
	if st.Effect == Allow {
		for _, a := range st.Actions {
			if strings.Contains(a, "*") {
				add(LintWildcardAction, "allows %s (%d actions); name the actions the caller needs", a, countActions(a))
			}
		}
		for _, g := range st.resources {
			if g.any {
				add(LintWildcardResource, "allows every resource (*); name the keys, aliases or paths")
			}
		}
		lintGrants(st, add)
		if len(st.conds) == 0 {
			var reads []string
			for ai, a := range catalogue {
				if a.Reads && st.actions.has(ai) {
					reads = append(reads, a.Name)
				}
			}
			if len(reads) > 0 {
				add(LintUnconditionedRead, "allows %s with no condition; bind it to an encryption context, a source range or a time window",
					strings.Join(reads, ", "))
			}
		}
	}

	// Actions that can meet no resource of the statement.
	var usable, unusable []string
	for ai, a := range catalogue {
		if !st.actions.has(ai) {
			continue
		}
		if compatible(a, st.resources) {
			usable = append(usable, a.Name)
		} else {
			unusable = append(unusable, a.Name)
		}
	}
	switch {
	case len(usable) == 0:
		add(LintNeverMatches, "never matches: %s cannot act on %s", describeActions(st, unusable), strings.Join(st.Resources, ", "))
		return
	case len(unusable) > 0 && !hasWildcardAction(st):
		add(LintUnusedAction, "%s can never match resources %s", strings.Join(unusable, ", "), strings.Join(st.Resources, ", "))
	}

	// Conditions that cannot hold.
	var after, before time.Time
	for j, c := range st.Conditions {
		cc := st.conds[j]
		switch {
		case cc.str != nil:
			if cc.str.key.context != "" && !cc.str.negate && !anyContextAction(&st.actions) {
				add(LintNeverMatches, "never matches: %s %s, but none of its actions carries an encryption context", c.Operator, c.Key)
			}
		case cc.date != nil:
			if cc.date.greater {
				after = cc.date.t
			} else {
				before = cc.date.t
				if !before.After(now) {
					add(LintExpired, "DateLessThan %s is past: the statement no longer applies", before.Format(time.RFC3339))
				}
			}
		}
	}
	if !after.IsZero() && !before.IsZero() && !before.After(after) {
		add(LintNeverMatches, "never matches: the time window is empty (DateGreaterThan %s, DateLessThan %s)",
			after.Format(time.RFC3339), before.Format(time.RFC3339))
	}

	if st.Effect != Allow {
		return
	}
	for j, o := range p.Statements {
		if j == i || len(o.conds) > 0 || len(o.principals) > 0 {
			continue
		}
		if o.Effect == Deny && covers(o, st) {
			add(LintShadowed, "never grants anything: statement %d (line %d) denies all of it", j+1, o.Line)
			return
		}
		if o.Effect == Allow && j < i && covers(o, st) {
			add(LintRedundant, "statement %d (line %d) already allows all of it", j+1, o.Line)
			return
		}
	}
}

// covers reports, conservatively, whether o applies to every request st
// applies to (ignoring st's conditions, which only narrow st).
func covers(o, st *Statement) bool {
	if !o.actions.covers(&st.actions) {
		return false
	}
	for _, r := range st.resources {
		ok := false
		for _, g := range o.resources {
			if g.covers(r) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// compatible reports whether action a can meet any of the resource patterns.
func compatible(a Action, rs []*glob) bool {
	for _, g := range rs {
		if g.any {
			return true
		}
		if a.Resource == ResourceNone {
			continue
		}
		k, _ := resourceKind(g)
		if k == "" || k == a.Resource {
			return true
		}
	}
	return false
}

func anyContextAction(s *actionSet) bool {
	for i, a := range catalogue {
		if a.Context && s.has(i) {
			return true
		}
	}
	return false
}

func hasWildcardAction(st *Statement) bool {
	for _, a := range st.Actions {
		if strings.Contains(a, "*") {
			return true
		}
	}
	return false
}

func describeActions(st *Statement, names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return strings.Join(st.Actions, ", ")
}

// countActions returns how many catalogue actions the pattern matches.
func countActions(pattern string) int {
	g, err := compileGlob(pattern, false)
	if err != nil {
		return 0
	}
	n := 0
	for _, a := range catalogue {
		if g.match(a.Name, nil) {
			n++
		}
	}
	return n
}

// grantActions attach stored policies to principals, or write them.
var grantActions = []string{"accesskey:Create", "accesskey:Update", "role:Create", "role:Update", "policy:Write"}

// lintGrants warns about an allow that lets its holder grant policies, and
// above all its own access key.
func lintGrants(st *Statement, add func(code, format string, args ...any)) {
	for _, a := range st.Actions {
		if a == "*" {
			return // wildcard-action says it louder
		}
	}
	var named []string
	for _, name := range grantActions {
		ai := actionIndex[name]
		if st.actions.has(ai) && compatible(catalogue[ai], st.resources) {
			named = append(named, name)
		}
	}
	if len(named) == 0 {
		return
	}
	if st.actions.has(actionIndex["accesskey:Update"]) {
		var self []string
		for i, g := range st.resources {
			if g.any || strings.Contains(g.src, "${principal.id}") || mayMatchAccessKey(g.src) {
				self = append(self, st.Resources[i])
			}
		}
		if len(self) > 0 {
			add(LintSelfUpdate, "allows accesskey:Update on %s, which includes the caller's own access key: it can change its own policies and re-enable itself; name the ids of the keys it manages, never its own", strings.Join(self, ", "))
		}
	}
	add(LintGrantsPolicies, "allows %s: its holder can attach stored policies to keys or roles (or write them), itself included through a key it creates or a role it may assume; keep it for administrators", strings.Join(named, ", "))
}

// mayMatchAccessKey reports whether a resource glob with a star can match
// an access key id it does not name (cf*, cfak_*, *_*): its text before
// the first star agrees with the prefix cfak_.
func mayMatchAccessKey(src string) bool {
	before, _, star := strings.Cut(src, "*")
	if !star {
		return false
	}
	const prefix = "cfak_"
	return strings.HasPrefix(prefix, before) || strings.HasPrefix(before, prefix)
}
