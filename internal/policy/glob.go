package policy

import (
	"errors"
	"fmt"
	"strings"
)

// A glob is a compiled pattern. '*' matches any run of characters,
// including '/' and the empty run; every other character is literal, except
// ${principal.FIELD}, which stands for the caller's value of FIELD at
// evaluation time. The characters ? [ ] { } are reserved (rejected), and
// "**" is rejected as a likely mistake: a single '*' already crosses '/'.
//
// Matching allocates nothing: a template is compared piece by piece against
// the input instead of being expanded.
type glob struct {
	src   string
	parts []part // the text between stars; len(parts) = stars + 1
	// any is true for "*" alone.
	any bool
	// literal is true when the glob has no star and no template: it matches
	// only src.
	literal bool
}

// part is a run of literal text and template variables.
type part []piece

// piece is literal text, or (when v != varNone) a template variable.
type piece struct {
	lit string
	v   principalVar
}

// principalVar names a field of the calling principal.
type principalVar struct {
	field int    // one of the var* constants
	attr  string // the attribute name, for varAttr
}

const (
	varNone = iota
	varID
	varKind
	varRole
	varNamespace
	varServiceAccount
	varAttr
)

var principalFields = map[string]int{
	"id":              varID,
	"kind":            varKind,
	"role":            varRole,
	"namespace":       varNamespace,
	"service_account": varServiceAccount,
}

// parsePrincipalVar parses FIELD of principal.FIELD (or attr.NAME).
func parsePrincipalVar(name string) (principalVar, error) {
	rest, ok := strings.CutPrefix(name, "principal.")
	if !ok {
		return principalVar{}, fmt.Errorf("unknown variable %q: want principal.id, principal.kind, principal.role, principal.namespace, principal.service_account or principal.attr.NAME", name)
	}
	if f, ok := principalFields[rest]; ok {
		return principalVar{field: f}, nil
	}
	if a, ok := strings.CutPrefix(rest, "attr."); ok && a != "" {
		return principalVar{field: varAttr, attr: a}, nil
	}
	return principalVar{}, fmt.Errorf("unknown variable %q: want principal.id, principal.kind, principal.role, principal.namespace, principal.service_account or principal.attr.NAME", name)
}

// value returns the principal's value of v; "" when it has none.
func (v principalVar) value(p *Principal) string {
	switch v.field {
	case varID:
		return p.ID
	case varKind:
		return p.Kind
	case varRole:
		return p.Role
	case varNamespace:
		return p.Namespace
	case varServiceAccount:
		return p.ServiceAccount
	case varAttr:
		return p.Attributes[v.attr]
	}
	return ""
}

// compileGlob compiles s. templates says whether ${...} is allowed.
func compileGlob(s string, templates bool) (*glob, error) {
	if s == "" {
		return nil, errors.New("empty pattern")
	}
	g := &glob{src: s, any: s == "*"}
	var cur part
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			cur = append(cur, piece{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '*':
			if i+1 < len(s) && s[i+1] == '*' {
				return nil, fmt.Errorf("%q: \"**\" is not allowed; a single * already matches across /", s)
			}
			flush()
			g.parts = append(g.parts, cur)
			cur = nil
		case c == '$':
			if !templates {
				return nil, fmt.Errorf("%q: templates (${...}) are not allowed here", s)
			}
			if i+1 >= len(s) || s[i+1] != '{' {
				return nil, fmt.Errorf("%q: '$' must start a template ${principal.FIELD}", s)
			}
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("%q: unterminated template (missing })", s)
			}
			v, err := parsePrincipalVar(s[i+2 : i+end])
			if err != nil {
				return nil, fmt.Errorf("%q: %w", s, err)
			}
			flush()
			cur = append(cur, piece{v: v})
			i += end
		case c == '?' || c == '[' || c == ']' || c == '{' || c == '}':
			return nil, fmt.Errorf("%q: %q is reserved; only * is a wildcard", s, c)
		case c < 0x20 || c == 0x7f:
			return nil, fmt.Errorf("%q: control character", s)
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	g.parts = append(g.parts, cur)
	g.literal = len(g.parts) == 1 && (len(cur) == 0 || len(cur) == 1 && cur[0].v.field == varNone)
	return g, nil
}

// templated reports whether g uses the principal's values.
func (g *glob) templated() bool {
	for _, p := range g.parts {
		for _, pc := range p {
			if pc.v.field != varNone {
				return true
			}
		}
	}
	return false
}

// stars returns the number of '*' in g.
func (g *glob) stars() int { return len(g.parts) - 1 }

// match reports whether s matches g for principal p. A template whose value
// is empty for p matches nothing: a caller without a namespace never
// matches "${principal.namespace}".
func (g *glob) match(s string, p *Principal) bool {
	if g.any {
		return true
	}
	if g.literal {
		return s == g.src
	}
	first := g.parts[0]
	n, ok := prefixLen(s, first, p)
	if !ok {
		return false
	}
	s = s[n:]
	if len(g.parts) == 1 {
		return s == ""
	}
	last := g.parts[len(g.parts)-1]
	m, ok := suffixLen(s, last, p)
	if !ok {
		return false
	}
	s = s[:len(s)-m]
	for _, mid := range g.parts[1 : len(g.parts)-1] {
		i, n, ok := index(s, mid, p)
		if !ok {
			return false
		}
		s = s[i+n:]
	}
	return true
}

// prefixLen reports whether s starts with pt and how many bytes it spans.
func prefixLen(s string, pt part, p *Principal) (int, bool) {
	n := 0
	for _, pc := range pt {
		t := pc.lit
		if pc.v.field != varNone {
			if t = pc.v.value(p); t == "" {
				return 0, false
			}
		}
		if !strings.HasPrefix(s[n:], t) {
			return 0, false
		}
		n += len(t)
	}
	return n, true
}

// suffixLen reports whether s ends with pt and how many bytes it spans.
func suffixLen(s string, pt part, p *Principal) (int, bool) {
	n := len(s)
	for i := len(pt) - 1; i >= 0; i-- {
		t := pt[i].lit
		if pt[i].v.field != varNone {
			if t = pt[i].v.value(p); t == "" {
				return 0, false
			}
		}
		if !strings.HasSuffix(s[:n], t) {
			return 0, false
		}
		n -= len(t)
	}
	return len(s) - n, true
}

// index finds the first occurrence of pt in s: its start and length.
func index(s string, pt part, p *Principal) (int, int, bool) {
	if len(pt) == 1 && pt[0].v.field == varNone {
		i := strings.Index(s, pt[0].lit)
		return i, len(pt[0].lit), i >= 0
	}
	for i := 0; i <= len(s); i++ {
		if n, ok := prefixLen(s[i:], pt, p); ok {
			return i, n, true
		}
	}
	return 0, 0, false
}

// literalPrefix returns the literal text before the first star or template.
func (g *glob) literalPrefix() string {
	if g.literal {
		return g.src
	}
	var b strings.Builder
	for _, pc := range g.parts[0] {
		if pc.v.field != varNone {
			break
		}
		b.WriteString(pc.lit)
	}
	return b.String()
}

// covers reports, conservatively, whether every string g2 matches is also
// matched by g (for any principal). False means "not sure".
func (g *glob) covers(g2 *glob) bool {
	if g.any || g.src == g2.src {
		return true
	}
	// g is "prefix*" with a literal prefix: covers g2 if g2's literal
	// prefix starts with it.
	if len(g.parts) == 2 && len(g.parts[1]) == 0 && !g.templated() {
		pre := g.literalPrefix()
		if g2.literal {
			return strings.HasPrefix(g2.src, pre)
		}
		return strings.HasPrefix(g2.literalPrefix(), pre)
	}
	return false
}
