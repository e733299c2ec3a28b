package sealedfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// jsonDoc is a JSON document whose top level is an object. It keeps the
// order of keys; it is written back indented by two spaces.
type jsonDoc struct {
	root *jnode
}

type jnode struct {
	kind byte // '{', '[', 's' (string) or 'l' (number, true, false, null)
	keys []string
	vals []*jnode // object values, or array items
	text string   // string value, or literal as written
}

const maxJSONDepth = 1000

func parseJSON(data []byte) (*jsonDoc, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	root, err := readJSON(dec, 0)
	if errors.Is(err, io.EOF) {
		err = errors.New("unexpected end of file")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not valid JSON: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: not valid JSON: more data after the top-level value", ErrMalformed)
	}
	if root.kind != '{' {
		return nil, fmt.Errorf("%w: the top level of the JSON file is not an object, so it cannot hold the coffer metadata", ErrMalformed)
	}
	return &jsonDoc{root: root}, nil
}

func readJSON(dec *json.Decoder, depth int) (*jnode, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &jnode{kind: '{'}
			seen := make(map[string]bool)
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, errors.New("object key is not a string")
				}
				if seen[k] {
					return nil, fmt.Errorf("the key %q appears twice in an object", k)
				}
				seen[k] = true
				v, err := readJSON(dec, depth+1)
				if err != nil {
					return nil, err
				}
				n.keys, n.vals = append(n.keys, k), append(n.vals, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return n, nil
		case '[':
			n := &jnode{kind: '['}
			for dec.More() {
				v, err := readJSON(dec, depth+1)
				if err != nil {
					return nil, err
				}
				n.vals = append(n.vals, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return n, nil
		}
		return nil, fmt.Errorf("unexpected %q", t)
	case string:
		return &jnode{kind: 's', text: t}, nil
	case json.Number:
		return &jnode{kind: 'l', text: t.String()}, nil
	case bool:
		return &jnode{kind: 'l', text: strconv.FormatBool(t)}, nil
	case nil:
		return &jnode{kind: 'l', text: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

func (n *jnode) field(key string) int {
	for i, k := range n.keys {
		if k == key {
			return i
		}
	}
	return -1
}

func (d *jsonDoc) secrets() []string { return nil }

func (d *jsonDoc) meta() (*metadata, error) {
	i := d.root.field(metaKeyName)
	if i < 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	writeJSON(&buf, d.root.vals[i], "")
	var m metadata
	dec := json.NewDecoder(&buf)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: the top-level %q entry is not valid coffer metadata: %v", ErrMalformed, metaKeyName, err)
	}
	return &m, nil
}

func (d *jsonDoc) setMeta(m *metadata) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := readJSON(dec, 0)
	if err != nil {
		return err
	}
	if i := d.root.field(metaKeyName); i >= 0 {
		d.root.vals[i] = n
		return nil
	}
	d.root.keys, d.root.vals = append(d.root.keys, metaKeyName), append(d.root.vals, n)
	return nil
}

func (d *jsonDoc) dropMeta() {
	if i := d.root.field(metaKeyName); i >= 0 {
		d.root.keys = append(d.root.keys[:i], d.root.keys[i+1:]...)
		d.root.vals = append(d.root.vals[:i], d.root.vals[i+1:]...)
	}
}

func (d *jsonDoc) encode() ([]byte, error) {
	var buf bytes.Buffer
	writeJSON(&buf, d.root, "")
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

func quoteJSON(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

func writeJSON(buf *bytes.Buffer, n *jnode, indent string) {
	switch n.kind {
	case 's':
		buf.WriteString(quoteJSON(n.text))
	case 'l':
		buf.WriteString(n.text)
	case '{', '[':
		open, close := "{", "}"
		if n.kind == '[' {
			open, close = "[", "]"
		}
		if len(n.vals) == 0 {
			buf.WriteString(open + close)
			return
		}
		buf.WriteString(open + "\n")
		in := indent + "  "
		for i, v := range n.vals {
			buf.WriteString(in)
			if n.kind == '{' {
				buf.WriteString(quoteJSON(n.keys[i]) + ": ")
			}
			writeJSON(buf, v, in)
			if i < len(n.vals)-1 {
				buf.WriteByte(',')
			}
			buf.WriteByte('\n')
		}
		buf.WriteString(indent + close)
	}
}

func (d *jsonDoc) slots() ([]*slot, error) {
	var out []*slot
	walkJSON(&out, d.root, nil, true)
	return out, nil
}

func walkJSON(out *[]*slot, n *jnode, p path, top bool) {
	switch n.kind {
	case '{':
		for i, k := range n.keys {
			if top && k == metaKeyName {
				continue
			}
			walkJSON(out, n.vals[i], p.with(seg{segKey, k}), false)
		}
	case '[':
		for i, v := range n.vals {
			walkJSON(out, v, p.with(seg{segIndex, strconv.Itoa(i)}), false)
		}
	default:
		*out = append(*out, jsonSlot(n, p))
	}
}

func jsonSlot(n *jnode, p path) *slot {
	s := &slot{path: p, value: n.text, null: n.kind == 'l' && n.text == "null"}
	if n.kind == 'l' {
		s.value = "" // a literal is never a sealed value
	}
	s.plain = func() ([]byte, error) {
		if n.kind == 's' {
			return typed(typeString, n.text), nil
		}
		return typed(typeLiteral, n.text), nil
	}
	s.setSealed = func(v string) { n.kind, n.text = 's', v }
	s.setPlain = func(t []byte) error {
		switch t[0] {
		case typeString:
			n.kind, n.text = 's', string(t[1:])
		case typeLiteral:
			lit := string(t[1:])
			var v any
			dec := json.NewDecoder(strings.NewReader(lit))
			dec.UseNumber()
			if err := dec.Decode(&v); err != nil || dec.More() {
				return errors.New("bad JSON literal")
			}
			switch v.(type) {
			case json.Number, bool:
			default:
				return errors.New("bad JSON literal")
			}
			n.kind, n.text = 'l', lit
		default:
			return fmt.Errorf("a value of type %q cannot be restored here", t[0])
		}
		return nil
	}
	return s
}
