package sealedfile

import (
	"encoding/binary"
	"strconv"
	"strings"
)

// A seg is one step of a value's path in its document.
type seg struct {
	kind byte // segKey, segIndex, segDoc or segSecret
	s    string
}

const (
	segKey    = 'k' // a mapping key (YAML, JSON) or a variable name (.env)
	segIndex  = 'i' // a list index, in decimal
	segDoc    = 'd' // the index of a YAML document in a multi-document file
	segSecret = 's' // a Kubernetes Secret's "namespace/name"
)

type path []seg

func (p path) with(s seg) path {
	return append(p[:len(p):len(p)], s)
}

// encode is the canonical, unambiguous encoding of p used in the AAD and
// the MAC: for each step, its kind byte, then its text as a uvarint length
// and the bytes.
func (p path) encode() []byte {
	var b []byte
	for _, s := range p {
		b = append(b, s.kind)
		b = binary.AppendUvarint(b, uint64(len(s.s)))
		b = append(b, s.s...)
	}
	return b
}

// String is the path for people: "db.hosts[0].password",
// "Secret prod/db: data.password", "[doc 2] a.b".
func (p path) String() string {
	var b strings.Builder
	for _, s := range p {
		switch s.kind {
		case segSecret:
			b.WriteString("Secret " + s.s + ": ")
		case segDoc:
			b.WriteString("[doc " + s.s + "] ")
		case segIndex:
			b.WriteString("[" + s.s + "]")
		default:
			if b.Len() > 0 && !strings.HasSuffix(b.String(), " ") {
				b.WriteByte('.')
			}
			if s.s == "" || strings.ContainsAny(s.s, ".[] \"") {
				b.WriteString(strconv.Quote(s.s))
			} else {
				b.WriteString(s.s)
			}
		}
	}
	if b.Len() == 0 {
		return "(top level)"
	}
	return strings.TrimSuffix(b.String(), " ")
}

// keys returns the mapping keys along p, matched by the selection.
func (p path) keys() []string {
	var ks []string
	for _, s := range p {
		if s.kind == segKey {
			ks = append(ks, s.s)
		}
	}
	return ks
}
