package sealedfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// envDoc is a .env file: lines of KEY=VALUE (optionally "export KEY=VALUE"),
// blank lines and # comments. A value is unquoted (up to a " #" comment),
// in single quotes (literal) or in double quotes (with the escapes \n \r
// \t \" \\ and \$); a value spans one line. Lines other than the values
// are kept as they are. The coffer metadata is a last line
// "# coffer: {JSON}".
type envDoc struct {
	lines []*envLine
	m     *metadata
}

type envLine struct {
	raw    string // the line as written, for comments and blank lines
	isVar  bool
	prefix string // up to the value: "export KEY="
	key    string
	text   string // the value as written, inside its quotes
	quote  byte   // 0, '\'' or '"'
	trail  string // after the value: " # comment"
}

const envMetaPrefix = "# coffer:"

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

func parseDotenv(data []byte) (*envDoc, error) {
	d := &envDoc{}
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	text = strings.TrimSuffix(text, "\n")
	if text == "" && len(data) == 0 {
		return d, nil
	}
	seenMeta := false
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, envMetaPrefix) {
			if seenMeta {
				return nil, fmt.Errorf("%w: line %d: a second %q line", ErrMalformed, n, envMetaPrefix)
			}
			seenMeta = true
			var m metadata
			dec := json.NewDecoder(strings.NewReader(strings.TrimSpace(t[len(envMetaPrefix):])))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil || dec.More() {
				return nil, fmt.Errorf("%w: line %d: not valid coffer metadata: %v", ErrMalformed, n, err)
			}
			d.m = &m
			continue
		}
		if t == "" || strings.HasPrefix(t, "#") {
			d.lines = append(d.lines, &envLine{raw: line})
			continue
		}
		l, err := parseEnvLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrMalformed, n, err)
		}
		d.lines = append(d.lines, l)
	}
	return d, nil
}

func parseEnvLine(line string) (*envLine, error) {
	eq := strings.IndexByte(line, '=')
	if eq < 0 {
		return nil, fmt.Errorf("want KEY=VALUE, a # comment or a blank line")
	}
	key := strings.TrimSpace(line[:eq])
	if k, ok := strings.CutPrefix(key, "export "); ok {
		key = strings.TrimSpace(k)
	}
	if !envKeyRE.MatchString(key) {
		return nil, fmt.Errorf("%q is not a valid variable name", key)
	}
	rest := line[eq+1:]
	start := eq + 1 + len(rest) - len(strings.TrimLeft(rest, " \t"))
	l := &envLine{isVar: true, key: key, prefix: line[:start]}
	rest = line[start:]
	switch {
	case strings.HasPrefix(rest, "'"):
		end := strings.IndexByte(rest[1:], '\'')
		if end < 0 {
			return nil, fmt.Errorf("%s: unterminated single-quoted value (values span one line)", key)
		}
		l.quote, l.text, l.trail = '\'', rest[1:1+end], rest[2+end:]
	case strings.HasPrefix(rest, `"`):
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' {
				i++
			}
		}
		if i >= len(rest) {
			return nil, fmt.Errorf("%s: unterminated double-quoted value (values span one line; write newlines as \\n)", key)
		}
		l.quote, l.text, l.trail = '"', rest[1:i], rest[i+1:]
	default:
		v := rest
		if i := strings.Index(v, " #"); i >= 0 {
			v = v[:i]
		} else if i := strings.Index(v, "\t#"); i >= 0 {
			v = v[:i]
		}
		l.text = strings.TrimRight(v, " \t")
		l.trail = rest[len(l.text):]
	}
	if tr := strings.TrimSpace(l.trail); tr != "" && !strings.HasPrefix(tr, "#") {
		return nil, fmt.Errorf("%s: unexpected text %q after the quoted value", key, tr)
	}
	return l, nil
}

func (d *envDoc) secrets() []string { return nil }

func (d *envDoc) meta() (*metadata, error) { return d.m, nil }

func (d *envDoc) setMeta(m *metadata) error {
	d.m = m
	return nil
}

func (d *envDoc) dropMeta() { d.m = nil }

func (d *envDoc) encode() ([]byte, error) {
	var b bytes.Buffer
	for _, l := range d.lines {
		if !l.isVar {
			b.WriteString(l.raw)
		} else {
			q := ""
			if l.quote != 0 {
				q = string(l.quote)
			}
			b.WriteString(l.prefix + q + l.text + q + l.trail)
		}
		b.WriteByte('\n')
	}
	if d.m != nil {
		j, err := json.Marshal(d.m)
		if err != nil {
			return nil, err
		}
		b.WriteString(envMetaPrefix + " ")
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

func (d *envDoc) slots() ([]*slot, error) {
	var out []*slot
	for _, l := range d.lines {
		if !l.isVar {
			continue
		}
		l := l
		// A quoted ENC[...] is still a sealed value.
		s := &slot{path: path{{segKey, l.key}}, value: l.text}
		s.plain = func() ([]byte, error) {
			switch l.quote {
			case '\'':
				return typed(typeEnvSingle, l.text), nil
			case '"':
				return typed(typeEnvDouble, l.text), nil
			}
			return typed(typeEnvBare, l.text), nil
		}
		s.setSealed = func(v string) { l.text, l.quote = v, 0 }
		s.setPlain = func(t []byte) error {
			switch t[0] {
			case typeEnvBare:
				l.quote = 0
			case typeEnvSingle:
				l.quote = '\''
			case typeEnvDouble:
				l.quote = '"'
			default:
				return fmt.Errorf("a value of type %q cannot be restored here", t[0])
			}
			if strings.ContainsAny(string(t[1:]), "\n\r") || strings.ContainsRune(string(t[1:]), rune(l.quote)) && l.quote != '"' {
				return errors.New("bad .env value")
			}
			l.text = string(t[1:])
			return nil
		}
		out = append(out, s)
	}
	return out, nil
}

// envUnquote decodes the text of a double-quoted .env value: the escapes
// \n \r \t \" \\ and \$; any other backslash stays.
func envUnquote(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '"', '\\', '$':
				b.WriteByte(s[i])
			default:
				b.WriteByte('\\')
				b.WriteByte(s[i])
			}
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
