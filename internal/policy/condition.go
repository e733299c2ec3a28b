package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Condition operators.
const (
	OpStringEquals    = "StringEquals"
	OpStringNotEquals = "StringNotEquals"
	OpStringLike      = "StringLike"
	OpStringNotLike   = "StringNotLike"
	OpIPAddress       = "IpAddress"
	OpNotIPAddress    = "NotIpAddress"
	OpDateGreaterThan = "DateGreaterThan"
	OpDateLessThan    = "DateLessThan"
	OpTimeOfDay       = "TimeOfDay"
)

var operators = []string{OpStringEquals, OpStringNotEquals, OpStringLike, OpStringNotLike,
	OpIPAddress, OpNotIPAddress, OpDateGreaterThan, OpDateLessThan, OpTimeOfDay}

// Condition keys other than context.NAME and principal.FIELD.
const (
	KeySourceIP = "source_ip"
	KeyTime     = "time"
)

// cond is a compiled condition: exactly one field is set. It is a struct
// rather than an interface so that the request, passed by pointer, does not
// escape to the heap on the evaluation path.
type cond struct {
	str  *stringCond
	ip   *ipCond
	date *dateCond
	day  *dayCond
}

func (c *cond) match(r *Request) bool {
	switch {
	case c.str != nil:
		return c.str.match(r)
	case c.ip != nil:
		return c.ip.match(r)
	case c.date != nil:
		return c.date.match(r)
	case c.day != nil:
		return c.day.match(r)
	}
	return false
}

// stringKey is where a string condition reads its value.
type stringKey struct {
	context string       // context.NAME: the name
	v       principalVar // principal.FIELD
}

func parseStringKey(k string) (stringKey, error) {
	if name, ok := strings.CutPrefix(k, "context."); ok {
		if name == "" {
			return stringKey{}, errors.New(`empty context key: want context.NAME`)
		}
		return stringKey{context: name}, nil
	}
	if strings.HasPrefix(k, "principal.") {
		v, err := parsePrincipalVar(k)
		return stringKey{v: v}, err
	}
	return stringKey{}, fmt.Errorf("unknown key %q for a string condition: want context.NAME or principal.FIELD", k)
}

// value returns the request's value for k and whether it has one.
func (k *stringKey) value(r *Request) (string, bool) {
	if k.context != "" {
		v, ok := r.Context[k.context]
		return v, ok
	}
	v := k.v.value(&r.Principal)
	return v, v != ""
}

// stringCond is StringEquals, StringNotEquals, StringLike, StringNotLike.
type stringCond struct {
	key    stringKey
	equals []part  // StringEquals / StringNotEquals: templated literals
	like   []*glob // StringLike / StringNotLike
	negate bool
}

func (c *stringCond) match(r *Request) bool {
	v, ok := c.key.value(r)
	if !ok {
		// Absent: equal to nothing.
		return c.negate
	}
	hit := false
	for _, e := range c.equals {
		if n, ok := prefixLen(v, e, &r.Principal); ok && n == len(v) {
			hit = true
			break
		}
	}
	if !hit {
		for _, g := range c.like {
			if g.match(v, &r.Principal) {
				hit = true
				break
			}
		}
	}
	return hit != c.negate
}

// compileTemplate parses a value that may hold ${principal.FIELD} but no
// wildcards: '*' is literal here.
func compileTemplate(s string) (part, error) {
	var p part
	for s != "" {
		i := strings.Index(s, "${")
		if i < 0 {
			if strings.ContainsRune(s, '$') {
				return nil, fmt.Errorf("'$' must start a template ${principal.FIELD}")
			}
			p = append(p, piece{lit: s})
			break
		}
		if i > 0 {
			if strings.ContainsRune(s[:i], '$') {
				return nil, fmt.Errorf("'$' must start a template ${principal.FIELD}")
			}
			p = append(p, piece{lit: s[:i]})
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return nil, errors.New("unterminated template (missing })")
		}
		v, err := parsePrincipalVar(s[i+2 : i+end])
		if err != nil {
			return nil, err
		}
		p = append(p, piece{v: v})
		s = s[i+end+1:]
	}
	if len(p) == 0 {
		p = part{{lit: ""}}
	}
	return p, nil
}

// ipCond is IpAddress / NotIpAddress on source_ip.
type ipCond struct {
	prefixes []netip.Prefix
	negate   bool
}

func (c *ipCond) match(r *Request) bool {
	if !r.SourceIP.IsValid() {
		// Unknown: in no range.
		return c.negate
	}
	ip := r.SourceIP.Unmap()
	for _, p := range c.prefixes {
		if p.Contains(ip) {
			return !c.negate
		}
	}
	return c.negate
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad CIDR %q: want like 10.0.0.0/8 or fd00::/8", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("CIDR %q has host bits set; did you mean %s?", s, p.Masked())
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("CIDR %q mixes IPv4-mapped and IPv6 addresses", s)
			}
			return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96), nil
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad address %q: want an IP or a CIDR like 10.0.0.0/8", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// dateCond is DateGreaterThan / DateLessThan on time.
type dateCond struct {
	t       time.Time
	greater bool
}

func (c *dateCond) match(r *Request) bool {
	if r.Time.IsZero() {
		return false
	}
	if c.greater {
		return r.Time.After(c.t)
	}
	return r.Time.Before(c.t)
}

// dayCond is TimeOfDay: a daily window [from, to) in a zone, optionally on
// some weekdays only. from > to spans midnight.
type dayCond struct {
	from, to int // minutes since midnight
	loc      *time.Location
	days     uint8 // bit per time.Weekday; 0: every day
}

func (c *dayCond) match(r *Request) bool {
	if r.Time.IsZero() {
		return false
	}
	t := r.Time.In(c.loc)
	m := t.Hour()*60 + t.Minute()
	wd := t.Weekday()
	var in bool
	if c.from <= c.to {
		in = m >= c.from && m < c.to
	} else {
		in = m >= c.from || m < c.to
		if m < c.to {
			// The window began yesterday: it is yesterday's window.
			wd = (wd + 6) % 7
		}
	}
	return in && (c.days == 0 || c.days&(1<<wd) != 0)
}

// parseClock parses HH:MM (00:00 to 24:00).
func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("bad time of day %q: want HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("bad time of day %q: want HH:MM from 00:00 to 24:00", s)
	}
	return hh*60 + mm, nil
}

// parseWindow parses "HH:MM-HH:MM".
func parseWindow(s string) (from, to int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("bad window %q: want HH:MM-HH:MM", s)
	}
	if from, err = parseClock(strings.TrimSpace(a)); err != nil {
		return 0, 0, err
	}
	if to, err = parseClock(strings.TrimSpace(b)); err != nil {
		return 0, 0, err
	}
	if from == to {
		return 0, 0, fmt.Errorf("empty window %q", s)
	}
	return from, to, nil
}

// parseZone parses UTC, a fixed offset like +02:00, or an IANA name.
func parseZone(s string) (*time.Location, error) {
	if s == "" || s == "UTC" || s == "Z" {
		return time.UTC, nil
	}
	if s[0] == '+' || s[0] == '-' {
		t, err := time.Parse("-07:00", s)
		if err != nil {
			return nil, fmt.Errorf("bad zone offset %q: want like +02:00", s)
		}
		_, off := t.Zone()
		return time.FixedZone(s, off), nil
	}
	loc, err := time.LoadLocation(s)
	if err != nil {
		return nil, fmt.Errorf("unknown zone %q: want UTC, an offset like +02:00, or an IANA name like Europe/Berlin", s)
	}
	return loc, nil
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}
