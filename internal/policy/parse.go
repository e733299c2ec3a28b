package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits of a policy document. A document past them is rejected, so a
// stored policy cannot make evaluation or parsing arbitrarily slow.
const (
	MaxDocumentSize = 256 << 10
	MaxStatements   = 256
	MaxListItems    = 256
	maxErrors       = 20
)

// Error is one problem in a policy document, with its position.
type Error struct {
	Name   string // the policy's name
	Line   int    // 1-based; 0 if unknown
	Column int
	Msg    string
}

// Error returns "NAME:LINE:COLUMN: MSG".
func (e *Error) Error() string {
	switch {
	case e.Line == 0:
		return e.Name + ": " + e.Msg
	case e.Column == 0:
		return fmt.Sprintf("%s:%d: %s", e.Name, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.Name, e.Line, e.Column, e.Msg)
}

// parser collects the errors of one document.
type parser struct {
	name string
	errs []error
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	if len(p.errs) >= maxErrors {
		return
	}
	e := &Error{Name: p.name, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

var yamlLineRe = regexp.MustCompile(`line (\d+)`)

// Parse reads and validates one policy document. name identifies it in
// errors and decisions. Every error of the returned error (errors.Join of
// *Error values, up to 20) names the line it is about.
func Parse(name string, data []byte) (*Policy, error) {
	p := &parser{name: name}
	if len(data) > MaxDocumentSize {
		return nil, &Error{Name: name, Msg: fmt.Sprintf("document is %d bytes; the limit is %d", len(data), MaxDocumentSize)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Name: name, Line: 1, Msg: "empty document: want a mapping with statements"}
		}
		return nil, yamlError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlError(name, err)
		}
		return nil, &Error{Name: name, Line: extra.Line, Column: extra.Column, Msg: "more than one YAML document: a file holds one policy"}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &Error{Name: name, Line: 1, Msg: "empty document: want a mapping with statements"}
	}
	pol := p.document(doc.Content[0])
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return pol, nil
}

// yamlError turns a YAML syntax error into an *Error with its line.
func yamlError(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{Name: name, Msg: "YAML: " + msg}
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		if strings.Contains(msg, "did not find expected") {
			// yaml.v3 reports the 0-based line of a parser error's
			// context (go-yaml issue: parser errors are not shifted).
			e.Line++
		}
		e.Msg = "YAML: " + strings.TrimPrefix(msg, m[0]+": ")
	}
	return e
}

// fields walks a mapping, rejecting duplicate and unknown keys and aliases.
func (p *parser) fields(n *yaml.Node, what string, known []string, f func(key string, k, v *yaml.Node)) bool {
	if n.Kind == yaml.AliasNode {
		p.errorf(n, "YAML aliases are not supported")
		return false
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s must be a mapping", what)
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, "%s: keys must be plain strings", what)
			continue
		}
		if seen[k.Value] {
			p.errorf(k, "%s: %q given twice", what, k.Value)
			continue
		}
		seen[k.Value] = true
		if known != nil && !slices.Contains(known, k.Value) {
			p.errorf(k, "%s: unknown field %q (want %s)", what, k.Value, strings.Join(known, ", "))
			continue
		}
		if v.Kind == yaml.AliasNode {
			p.errorf(v, "YAML aliases are not supported")
			continue
		}
		f(k.Value, k, v)
	}
	return true
}

// scalar returns a scalar's text; "" and an error for anything else.
func (p *parser) scalar(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n, "%s must be a string", what)
		return "", false
	}
	return n.Value, true
}

// list returns a scalar or a sequence of scalars as a list, with the node
// of each item.
func (p *parser) list(n *yaml.Node, what string) ([]string, []*yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{n.Value}, []*yaml.Node{n}
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "%s must be a string or a list of strings", what)
		return nil, nil
	}
	if len(n.Content) == 0 {
		p.errorf(n, "%s is empty", what)
		return nil, nil
	}
	if len(n.Content) > MaxListItems {
		p.errorf(n, "%s has %d items; the limit is %d", what, len(n.Content), MaxListItems)
		return nil, nil
	}
	var out []string
	var nodes []*yaml.Node
	for _, it := range n.Content {
		s, ok := p.scalar(it, what+" item")
		if ok {
			out = append(out, s)
			nodes = append(nodes, it)
		}
	}
	return out, nodes
}

func (p *parser) document(n *yaml.Node) *Policy {
	pol := &Policy{Name: p.name}
	var stmts *yaml.Node
	if !p.fields(n, "policy", []string{"version", "description", "statements"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			if s, ok := p.scalar(v, "version"); ok && s != "1" {
				p.errorf(v, "unsupported version %q: this server reads version 1", s)
			}
		case "description":
			pol.Description, _ = p.scalar(v, "description")
		case "statements":
			stmts = v
		}
	}) {
		return nil
	}
	if stmts == nil {
		p.errorf(n, "policy has no statements")
		return nil
	}
	if stmts.Kind != yaml.SequenceNode || len(stmts.Content) == 0 {
		p.errorf(stmts, "statements must be a non-empty list")
		return nil
	}
	if len(stmts.Content) > MaxStatements {
		p.errorf(stmts, "%d statements; the limit is %d", len(stmts.Content), MaxStatements)
		return nil
	}
	sids := map[string]int{}
	for i, sn := range stmts.Content {
		st := p.statement(sn, i)
		if st == nil {
			continue
		}
		if st.Sid != "" {
			if prev, dup := sids[st.Sid]; dup {
				p.errorf(sn, "statement %d: sid %q is already used by the statement on line %d", i+1, st.Sid, prev)
			}
			sids[st.Sid] = st.Line
		}
		st.ref = StatementRef{Policy: p.name, Index: i, Sid: st.Sid, Line: st.Line, Effect: st.Effect}
		pol.Statements = append(pol.Statements, st)
	}
	return pol
}

var sidRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (p *parser) statement(n *yaml.Node, i int) *Statement {
	st := &Statement{Line: n.Line}
	where := fmt.Sprintf("statement %d", i+1)
	var haveEffect, haveActions, haveResources bool
	before := len(p.errs)
	if !p.fields(n, where, []string{"sid", "effect", "actions", "resources", "principals", "conditions"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "sid":
			if s, ok := p.scalar(v, "sid"); ok {
				if !sidRe.MatchString(s) {
					p.errorf(v, "%s: bad sid %q: letters, digits, _ . - (up to 128)", where, s)
				}
				st.Sid = s
			}
		case "effect":
			haveEffect = true
			s, ok := p.scalar(v, "effect")
			switch {
			case !ok:
			case s == "allow":
				st.Effect = Allow
			case s == "deny":
				st.Effect = Deny
			default:
				p.errorf(v, "%s: effect %q: want allow or deny", where, s)
			}
		case "actions":
			haveActions = true
			p.actions(st, v, where)
		case "resources":
			haveResources = true
			p.resources(st, v, where)
		case "principals":
			p.principals(st, v, where)
		case "conditions":
			p.conditions(st, v, where)
		}
	}) {
		return nil
	}
	if !haveEffect {
		p.errorf(n, "%s: missing effect (allow or deny)", where)
	}
	if !haveActions {
		p.errorf(n, "%s: missing actions", where)
	}
	if !haveResources {
		p.errorf(n, `%s: missing resources (use "*" for every resource, and for actions on none)`, where)
	}
	if len(p.errs) > before {
		return nil
	}
	return st
}

func (p *parser) actions(st *Statement, v *yaml.Node, where string) {
	names, nodes := p.list(v, "actions")
	for j, a := range names {
		g, err := compileGlob(a, false)
		if err != nil {
			p.errorf(nodes[j], "%s: bad action pattern: %v", where, err)
			continue
		}
		var set actionSet
		for i, c := range catalogue {
			if g.match(c.Name, nil) {
				set.add(i)
			}
		}
		if set.empty() {
			msg := fmt.Sprintf("%s: unknown action %q", where, a)
			if g.stars() > 0 {
				msg = fmt.Sprintf("%s: action pattern %q matches no action", where, a)
			} else if s := suggestAction(a); s != "" {
				msg += "; did you mean " + s + "?"
			}
			p.errorf(nodes[j], "%s (see coffer policy actions, or docs/policy.md)", msg)
			continue
		}
		st.Actions = append(st.Actions, a)
		for i := range st.actions {
			st.actions[i] |= set[i]
		}
	}
}

// resourceTypes are the prefixes of typed resource names.
var resourceTypes = map[string]ResourceKind{
	"alias/":   ResourceKey,
	"secret/":  ResourceSecret,
	"role/":    ResourceRole,
	"policy/":  ResourcePolicy,
	"cluster/": ResourceCluster,
	"acc_":     ResourceToken,
	"cfak_":    ResourceAccessKey,
}

const resourceHint = "want a key id, alias/NAME, secret/PATH, role/NAME, policy/NAME, cluster/NAME, a token accessor acc_..., an access key id cfak_..., or *"

// resourceKind classifies a resource pattern; "" with ok for patterns that
// may match several kinds.
func resourceKind(g *glob) (ResourceKind, error) {
	if g.any {
		return "", nil
	}
	lp := g.literalPrefix()
	for pre, k := range resourceTypes {
		if strings.HasPrefix(lp, pre) {
			return k, nil
		}
	}
	if !g.literal || g.stars() > 0 {
		// A glob or template before the type is known: fine if the
		// literal prefix could still start a type or a key id.
		for pre := range resourceTypes {
			if strings.HasPrefix(pre, lp) {
				return "", nil
			}
		}
	}
	if isKeyIDPattern(g.src) {
		return ResourceKey, nil
	}
	if strings.ContainsAny(g.src, "ABCDEF") && isKeyIDPattern(strings.ToLower(g.src)) {
		return "", fmt.Errorf("resource %q: key ids are lowercase", g.src)
	}
	return "", fmt.Errorf("unknown resource %q: %s", g.src, resourceHint)
}

func isKeyIDPattern(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '-' || c == '*') {
			return false
		}
	}
	return true
}

func (p *parser) resources(st *Statement, v *yaml.Node, where string) {
	names, nodes := p.list(v, "resources")
	for j, r := range names {
		g, err := compileGlob(r, true)
		if err != nil {
			p.errorf(nodes[j], "%s: bad resource pattern: %v", where, err)
			continue
		}
		if _, err := resourceKind(g); err != nil {
			p.errorf(nodes[j], "%s: %v", where, err)
			continue
		}
		st.Resources = append(st.Resources, r)
		st.resources = append(st.resources, g)
	}
}

// principalPattern matches principals: kind "role" matches the role the
// caller acts in, other kinds match Kind and ID.
type principalPattern struct {
	kind string // "" for *
	id   *glob
}

func (pp *principalPattern) match(p *Principal) bool {
	switch pp.kind {
	case "":
		return true
	case "role":
		return p.Role != "" && pp.id.match(p.Role, p)
	}
	return p.Kind == pp.kind && pp.id.match(p.ID, p)
}

var principalKinds = []string{"role", "access-key", "token", "root"}

func (p *parser) principals(st *Statement, v *yaml.Node, where string) {
	names, nodes := p.list(v, "principals")
	for j, s := range names {
		if s == "*" {
			st.Principals = append(st.Principals, s)
			st.principals = append(st.principals, principalPattern{})
			continue
		}
		kind, id, ok := strings.Cut(s, ":")
		if !ok || !slices.Contains(principalKinds, kind) {
			p.errorf(nodes[j], "%s: bad principal %q: want KIND:ID with KIND one of %s, or *", where, s, strings.Join(principalKinds, ", "))
			continue
		}
		g, err := compileGlob(id, false)
		if err != nil {
			p.errorf(nodes[j], "%s: bad principal pattern: %v", where, err)
			continue
		}
		st.Principals = append(st.Principals, s)
		st.principals = append(st.principals, principalPattern{kind: kind, id: g})
	}
}

func (p *parser) conditions(st *Statement, v *yaml.Node, where string) {
	p.fields(v, where+" conditions", nil, func(op string, k, body *yaml.Node) {
		if !slices.Contains(operators, op) {
			msg := fmt.Sprintf("%s: unknown condition operator %q", where, op)
			for _, o := range operators {
				if strings.EqualFold(o, op) {
					msg += "; did you mean " + o + "?"
				}
			}
			p.errorf(k, "%s (want %s)", msg, strings.Join(operators, ", "))
			return
		}
		if op == OpTimeOfDay {
			p.timeOfDay(st, k, body, where)
			return
		}
		p.fields(body, where+" "+op, nil, func(key string, kn, vn *yaml.Node) {
			vals, nodes := p.list(vn, op+" "+key)
			if vals == nil {
				return
			}
			c := Condition{Operator: op, Key: key, Values: vals, Line: kn.Line}
			var cc cond
			switch op {
			case OpStringEquals, OpStringNotEquals, OpStringLike, OpStringNotLike:
				sk, err := parseStringKey(key)
				if err != nil {
					p.errorf(kn, "%s: %s: %v", where, op, err)
					return
				}
				sc := &stringCond{key: sk, negate: op == OpStringNotEquals || op == OpStringNotLike}
				for j, s := range vals {
					if op == OpStringEquals || op == OpStringNotEquals {
						t, err := compileTemplate(s)
						if err != nil {
							p.errorf(nodes[j], "%s: %s %s: value %q: %v", where, op, key, s, err)
							return
						}
						sc.equals = append(sc.equals, t)
					} else {
						g, err := compileGlob(s, true)
						if err != nil {
							p.errorf(nodes[j], "%s: %s %s: %v", where, op, key, err)
							return
						}
						sc.like = append(sc.like, g)
					}
				}
				cc.str = sc
			case OpIPAddress, OpNotIPAddress:
				if key != KeySourceIP {
					p.errorf(kn, "%s: %s takes the key %s, not %q", where, op, KeySourceIP, key)
					return
				}
				ic := &ipCond{negate: op == OpNotIPAddress}
				for j, s := range vals {
					pre, err := parsePrefix(s)
					if err != nil {
						p.errorf(nodes[j], "%s: %s: %v", where, op, err)
						return
					}
					ic.prefixes = append(ic.prefixes, pre)
				}
				cc.ip = ic
			case OpDateGreaterThan, OpDateLessThan:
				if key != KeyTime {
					p.errorf(kn, "%s: %s takes the key %s, not %q", where, op, KeyTime, key)
					return
				}
				if len(vals) != 1 {
					p.errorf(vn, "%s: %s takes one time", where, op)
					return
				}
				t, err := time.Parse(time.RFC3339, vals[0])
				if err != nil {
					p.errorf(nodes[0], "%s: %s: bad time %q: want RFC 3339 like 2026-01-31T18:00:00Z", where, op, vals[0])
					return
				}
				cc.date = &dateCond{t: t, greater: op == OpDateGreaterThan}
			}
			st.Conditions = append(st.Conditions, c)
			st.conds = append(st.conds, cc)
		})
	})
	if v.Kind == yaml.MappingNode && len(v.Content) == 0 {
		p.errorf(v, "%s: conditions is empty; leave it out instead", where)
	}
}

func (p *parser) timeOfDay(st *Statement, k, body *yaml.Node, where string) {
	dc := &dayCond{loc: time.UTC}
	haveWindow := false
	var window, zone string
	var days []string
	ok := true
	p.fields(body, where+" "+OpTimeOfDay, []string{"between", "zone", "days"}, func(key string, kn, vn *yaml.Node) {
		switch key {
		case "between":
			s, good := p.scalar(vn, "between")
			if !good {
				ok = false
				return
			}
			from, to, err := parseWindow(s)
			if err != nil {
				p.errorf(vn, "%s: TimeOfDay: %v", where, err)
				ok = false
				return
			}
			dc.from, dc.to, haveWindow, window = from, to, true, s
		case "zone":
			s, good := p.scalar(vn, "zone")
			if !good {
				ok = false
				return
			}
			loc, err := parseZone(s)
			if err != nil {
				p.errorf(vn, "%s: TimeOfDay: %v", where, err)
				ok = false
				return
			}
			dc.loc, zone = loc, s
		case "days":
			vals, nodes := p.list(vn, "days")
			for j, d := range vals {
				wd, good := weekdays[strings.ToLower(d)]
				if !good {
					p.errorf(nodes[j], "%s: TimeOfDay: bad day %q: want Mon, Tue, Wed, Thu, Fri, Sat or Sun", where, d)
					ok = false
					continue
				}
				dc.days |= 1 << wd
			}
			days = vals
		}
	})
	if !haveWindow {
		if ok && body.Kind == yaml.MappingNode {
			p.errorf(k, "%s: TimeOfDay needs between: HH:MM-HH:MM", where)
		}
		return
	}
	if !ok {
		return
	}
	vals := []string{window}
	if zone != "" {
		vals = append(vals, "zone="+zone)
	}
	if len(days) > 0 {
		vals = append(vals, "days="+strings.Join(days, ","))
	}
	st.Conditions = append(st.Conditions, Condition{Operator: OpTimeOfDay, Key: KeyTime, Values: vals, Line: k.Line})
	st.conds = append(st.conds, cond{day: dc})
}
