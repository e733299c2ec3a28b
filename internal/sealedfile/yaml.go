package sealedfile

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlDoc is a YAML stream of one or more documents. When one of them is
// a Kubernetes Secret (apiVersion v1, kind Secret) the file is a manifest
// file: only the data and stringData values of its Secrets are sealed,
// and every other document is left alone.
type yamlDoc struct {
	docs     []*yaml.Node // document nodes
	manifest bool
}

func parseYAML(data []byte) (*yamlDoc, error) {
	d := &yamlDoc{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: not valid YAML: %v", ErrMalformed, err)
		}
		if n.Kind != yaml.DocumentNode || len(n.Content) != 1 {
			continue
		}
		d.docs = append(d.docs, &n)
		if isSecret(n.Content[0]) {
			d.manifest = true
		}
	}
	if len(d.docs) == 0 {
		return nil, fmt.Errorf("%w: the YAML file holds no document", ErrMalformed)
	}
	return d, nil
}

// field returns the index in m.Content of the key node key, or -1.
func field(m *yaml.Node, key string) int {
	if m == nil || m.Kind != yaml.MappingNode {
		return -1
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			return i
		}
	}
	return -1
}

func fieldValue(m *yaml.Node, key string) *yaml.Node {
	if i := field(m, key); i >= 0 {
		return m.Content[i+1]
	}
	return nil
}

func scalar(n *yaml.Node) string {
	if n != nil && n.Kind == yaml.ScalarNode {
		return n.Value
	}
	return ""
}

func isSecret(root *yaml.Node) bool {
	return root.Kind == yaml.MappingNode && scalar(fieldValue(root, "kind")) == "Secret" &&
		scalar(fieldValue(root, "apiVersion")) == "v1"
}

// secretName returns "namespace/name" of a Secret.
func secretName(root *yaml.Node) string {
	md := fieldValue(root, "metadata")
	return scalar(fieldValue(md, "namespace")) + "/" + scalar(fieldValue(md, "name"))
}

func (d *yamlDoc) secrets() []string {
	var s []string
	for _, doc := range d.docs {
		if isSecret(doc.Content[0]) {
			s = append(s, secretName(doc.Content[0]))
		}
	}
	return s
}

// top is the mapping that holds the coffer metadata: the first document's.
func (d *yamlDoc) top() *yaml.Node { return d.docs[0].Content[0] }

func (d *yamlDoc) meta() (*metadata, error) {
	n := fieldValue(d.top(), metaKeyName)
	if n == nil {
		return nil, nil
	}
	b, err := yaml.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("%w: coffer metadata: %v", ErrMalformed, err)
	}
	var m metadata
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: the top-level %q entry is not valid coffer metadata: %v", ErrMalformed, metaKeyName, err)
	}
	return &m, nil
}

func (d *yamlDoc) setMeta(m *metadata) error {
	top := d.top()
	if top.Kind != yaml.MappingNode {
		return fmt.Errorf("%w: the top level of the (first) YAML document is not a mapping, so it cannot hold the coffer metadata", ErrMalformed)
	}
	var n yaml.Node
	if err := n.Encode(m); err != nil {
		return err
	}
	if i := field(top, metaKeyName); i >= 0 {
		top.Content[i+1] = &n
		return nil
	}
	top.Content = append(top.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: metaKeyName}, &n)
	return nil
}

func (d *yamlDoc) dropMeta() {
	top := d.top()
	if i := field(top, metaKeyName); i >= 0 {
		top.Content = append(top.Content[:i], top.Content[i+2:]...)
	}
}

func (d *yamlDoc) encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, doc := range d.docs {
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (d *yamlDoc) slots() ([]*slot, error) {
	var out []*slot
	for i, doc := range d.docs {
		root := doc.Content[0]
		if d.manifest {
			if !isSecret(root) {
				continue
			}
			p := path{{segSecret, secretName(root)}}
			for _, f := range []string{"data", "stringData"} {
				m := fieldValue(root, f)
				if m == nil || m.Kind == yaml.ScalarNode && m.ShortTag() == "!!null" {
					continue
				}
				if m.Kind != yaml.MappingNode {
					return nil, fmt.Errorf("%w: %s is not a mapping", ErrMalformed, p.with(seg{segKey, f}))
				}
				for j := 0; j+1 < len(m.Content); j += 2 {
					k, v := m.Content[j], m.Content[j+1]
					vp := p.with(seg{segKey, f}).with(seg{segKey, k.Value})
					if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
						return nil, fmt.Errorf("%w: %s is not a string", ErrMalformed, vp)
					}
					out = append(out, yamlSlot(v, vp, f == "data"))
				}
			}
			continue
		}
		var p path
		if len(d.docs) > 1 {
			p = path{{segDoc, strconv.Itoa(i)}}
		}
		var err error
		if out, err = walkYAML(out, root, p, i == 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func walkYAML(out []*slot, n *yaml.Node, p path, top bool) ([]*slot, error) {
	switch n.Kind {
	case yaml.MappingNode:
		seen := make(map[string]bool)
		for j := 0; j+1 < len(n.Content); j += 2 {
			k, v := n.Content[j], n.Content[j+1]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("%w: %s has a key that is not a scalar (line %d)", ErrMalformed, p, k.Line)
			}
			if top && k.Value == metaKeyName || k.ShortTag() == "!!merge" {
				continue
			}
			if seen[k.Value] {
				return nil, fmt.Errorf("%w: the key %q appears twice (line %d)", ErrMalformed, k.Value, k.Line)
			}
			seen[k.Value] = true
			var err error
			if out, err = walkYAML(out, v, p.with(seg{segKey, k.Value}), false); err != nil {
				return nil, err
			}
		}
	case yaml.SequenceNode:
		for j, v := range n.Content {
			var err error
			if out, err = walkYAML(out, v, p.with(seg{segIndex, strconv.Itoa(j)}), false); err != nil {
				return nil, err
			}
		}
	case yaml.ScalarNode:
		out = append(out, yamlSlot(n, p, false))
	}
	// Aliases are left alone: the node they name is sealed where it is.
	return out, nil
}

func yamlSlot(n *yaml.Node, p path, b64 bool) *slot {
	s := &slot{path: p, value: n.Value, null: n.ShortTag() == "!!null" && !b64}
	s.plain = func() ([]byte, error) {
		switch {
		case b64:
			raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(n.Value), ""))
			if err != nil {
				return nil, fmt.Errorf("%w: %s is not valid base64 (a Secret's data holds base64; put plain text under stringData)", ErrMalformed, p)
			}
			return typed(typeRaw, string(raw)), nil
		case n.ShortTag() == "!!str":
			return typed(typeString, n.Value), nil
		}
		return typed(typeTagged, n.ShortTag()+"\x00"+n.Value), nil
	}
	s.setSealed = func(v string) {
		n.Value, n.Tag, n.Style = v, "!!str", 0
	}
	s.setPlain = func(t []byte) error {
		switch {
		case b64 && t[0] == typeRaw:
			n.Value, n.Tag, n.Style = base64.StdEncoding.EncodeToString(t[1:]), "!!str", 0
		case !b64 && t[0] == typeString:
			n.Value, n.Tag, n.Style = string(t[1:]), "!!str", 0
		case !b64 && t[0] == typeTagged:
			tag, v, ok := bytes.Cut(t[1:], []byte{0})
			if !ok || len(tag) == 0 {
				return errors.New("bad tagged value")
			}
			n.Value, n.Tag, n.Style = string(v), string(tag), 0
		default:
			return fmt.Errorf("a value of type %q cannot be restored here", t[0])
		}
		return nil
	}
	return s
}
