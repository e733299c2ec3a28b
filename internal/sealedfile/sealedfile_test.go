package sealedfile

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/envelope"
)

var ctx = context.Background()

func newKey(t testing.TB, name string) *envelope.LocalKey {
	t.Helper()
	k, err := envelope.GenerateLocalKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func seal(t testing.TB, f Format, name, only, in string, k *envelope.LocalKey) *SealResult {
	t.Helper()
	r, err := Seal(ctx, []byte(in), Options{Format: f, Name: name, Only: only, Wrapper: k, Unwrappers: []envelope.Unwrapper{k}})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return r
}

func open(f Format, data string, k *envelope.LocalKey) (*Opened, error) {
	return Open(ctx, []byte(data), Options{Format: f, Unwrappers: []envelope.Unwrapper{k}})
}

func mustOpen(t testing.TB, f Format, data string, k *envelope.LocalKey) *Opened {
	t.Helper()
	o, err := open(f, data, k)
	if err != nil {
		t.Fatalf("Open: %v\n%s", err, data)
	}
	t.Cleanup(o.Close)
	return o
}

var encRE = regexp.MustCompile(`ENC\[coffer:v1,[A-Za-z0-9+/=]+\]`)

func sealedValues(s string) []string { return encRE.FindAllString(s, -1) }

// roundTrip seals in, checks that none of secrets shows and that every
// one of visible does, and that unsealing gives in back exactly.
func roundTrip(t *testing.T, f Format, in string, wantSealed int, secrets, visible []string) (string, *envelope.LocalKey) {
	t.Helper()
	k := newKey(t, "k")
	r := seal(t, f, "dir/"+string(f)+"-file", "", in, k)
	out := string(r.Data)
	if r.Sealed != wantSealed || !r.New {
		t.Errorf("sealed %d values (new %v), want %d new\n%s", r.Sealed, r.New, wantSealed, out)
	}
	if n := len(sealedValues(out)); n != wantSealed {
		t.Errorf("%d sealed values in the output, want %d\n%s", n, wantSealed, out)
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("sealed file shows %q\n%s", s, out)
		}
	}
	for _, s := range visible {
		if !strings.Contains(out, s) {
			t.Errorf("sealed file lost %q\n%s", s, out)
		}
	}
	o := mustOpen(t, f, out, k)
	if got := string(o.Plaintext()); got != in {
		t.Errorf("unsealed file differs:\n--- got\n%s\n--- want\n%s", got, in)
	}
	// Sealing again changes nothing.
	r2 := seal(t, f, "", "", out, k)
	if string(r2.Data) != out || r2.Kept != wantSealed || r2.Sealed != 0 || r2.New {
		t.Errorf("sealing again: kept %d, sealed %d, changed %v", r2.Kept, r2.Sealed, string(r2.Data) != out)
	}
	return out, k
}

const yamlIn = `# Application settings
db:
  host: db.internal # the primary
  port: 5432
  password: s3cr3t-pw
  ratio: 0.75
  enabled: true
  nothing: null
  replicas:
    - name: r1
      token: tok-r1
    - plain-item
  cert: |
    -----BEGIN-----
    abc
# trailing note
api:
  key: "0123"
  when: 2024-01-02
`

func TestRoundTripYAML(t *testing.T) {
	out, k := roundTrip(t, YAML, yamlIn, 11,
		[]string{"s3cr3t-pw", "tok-r1", "plain-item", "db.internal", "BEGIN", "5432"},
		[]string{"# Application settings", "# the primary", "# trailing note", "replicas:", "nothing: null", "\ncoffer:\n  version: 1\n", "file: dir/yaml-file"})
	o := mustOpen(t, YAML, out, k)
	got := map[string]string{}
	for _, v := range o.Values() {
		got[v.Path] = v.Value
	}
	for p, want := range map[string]string{"db.password": "s3cr3t-pw", "db.port": "5432", "db.replicas[0].token": "tok-r1", "api.key": "0123"} {
		if got[p] != want {
			t.Errorf("value %s = %q, want %q (all: %v)", p, got[p], want, got)
		}
	}
}

const jsonIn = `{
  "name": "app",
  "db": {
    "password": "p\"w <&> é",
    "port": 5432,
    "ratio": 1.5e3,
    "tls": false,
    "none": null,
    "hosts": [
      "a",
      "b"
    ],
    "empty": {},
    "list": []
  }
}
`

func TestRoundTripJSON(t *testing.T) {
	roundTrip(t, JSON, jsonIn, 7, []string{`p\"w`, "5432", "1.5e3"},
		[]string{`"name": "ENC[`, `"none": null`, `"empty": {}`, `"coffer": {`})
}

const envIn = `# database
export DB_HOST=db.internal
DB_PASS='it''s'
DB_USER="app user" # inline comment
TOKEN=abc#notacomment
EMPTY=
SPACED = "line1\nline2 $HOME"

export API_KEY=k-123  # trailing
`

func TestRoundTripDotenv(t *testing.T) {
	// 'it''s' is not valid in one line for us: the first quote ends it.
	if _, err := Seal(ctx, []byte(envIn), Options{Format: Dotenv, Name: "x", Wrapper: newKey(t, "k")}); err == nil {
		t.Fatal("an unterminated quote sealed")
	}
	in := strings.Replace(envIn, `DB_PASS='it''s'`, `DB_PASS='p@ss w0rd'`, 1)
	out, k := roundTrip(t, Dotenv, in, 7, []string{"p@ss", "app user", "k-123", "line1", "db.internal"},
		[]string{"# database\n", "export DB_HOST=ENC[", "DB_USER=ENC[", " # inline comment\n", "SPACED = ENC[", "export API_KEY=ENC[", "  # trailing\n", "\n# coffer: {\"version\":1,"})
	o := mustOpen(t, Dotenv, out, k)
	want := map[string]string{"DB_HOST": "db.internal", "DB_PASS": "p@ss w0rd", "DB_USER": "app user",
		"TOKEN": "abc#notacomment", "EMPTY": "", "SPACED": "line1\nline2 $HOME", "API_KEY": "k-123"}
	for _, v := range o.Values() {
		if want[v.Key] != v.Value || !v.Sealed {
			t.Errorf("%s = %q (sealed %v), want %q", v.Key, v.Value, v.Sealed, want[v.Key])
		}
		delete(want, v.Key)
	}
	if len(want) != 0 {
		t.Errorf("missing values %v", want)
	}
}

const manifestIn = `apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: production
---
apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: prod
type: Opaque
data:
  password: cGFzc3dvcmQ=
  blob: AAEC/w==
stringData:
  url: postgres://app@db/app
---
apiVersion: v1
kind: Secret
metadata:
  name: api
  namespace: prod
stringData:
  token: tok-123
`

func TestSecretManifest(t *testing.T) {
	out, k := roundTrip(t, YAML, manifestIn, 4, []string{"cGFzc3dvcmQ=", "AAEC/w==", "postgres://", "tok-123"},
		[]string{"mode: production", "name: settings", "type: Opaque", "namespace: prod"})
	o := mustOpen(t, YAML, out, k)
	if c := o.Context(); len(c) != 1 || c["file"] != "dir/yaml-file" {
		t.Errorf("context %v, want only the file (two Secrets)", c)
	}
	for _, v := range o.Values() {
		if v.Path == "Secret prod/db: data.password" && v.Value != "password" {
			t.Errorf("data.password = %q, want the decoded bytes", v.Value)
		}
	}

	// One Secret: its namespace and name join the encryption context.
	one := manifestIn[strings.Index(manifestIn, "apiVersion: v1\nkind: Secret"):strings.LastIndex(manifestIn, "---")]
	r := seal(t, YAML, "s.yaml", "", one, k)
	if c := r.Context; c["namespace"] != "prod" || c["name"] != "db" || c["file"] != "s.yaml" {
		t.Errorf("context %v", c)
	}
	// Renaming the Secret breaks its values: they are bound to it.
	moved := strings.Replace(string(r.Data), "name: db", "name: db2", 1)
	if _, err := open(YAML, moved, k); err == nil {
		t.Error("a renamed Secret unsealed")
	}
	// Data that is not base64 is refused.
	bad := strings.Replace(one, "cGFzc3dvcmQ=", "not base64!", 1)
	if _, err := Seal(ctx, []byte(bad), Options{Format: YAML, Name: "x", Wrapper: k}); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad base64: %v", err)
	}
}

func TestOnly(t *testing.T) {
	k := newKey(t, "k")
	r := seal(t, YAML, "c.yaml", "^(password|token)$", yamlIn, k)
	out := string(r.Data)
	if r.Sealed != 2 || r.Plain != 9 {
		t.Errorf("sealed %d, plain %d, want 2 and 9", r.Sealed, r.Plain)
	}
	for _, s := range []string{"host: db.internal", "port: 5432", "- plain-item", "only: ^(password|token)$"} {
		if !strings.Contains(out, s) {
			t.Errorf("missing %q\n%s", s, out)
		}
	}
	if strings.Contains(out, "s3cr3t") || strings.Contains(out, "tok-r1") {
		t.Errorf("selected value left in plaintext\n%s", out)
	}
	// A plaintext value outside the selection may be edited or added freely.
	edited := strings.Replace(out, "port: 5432", "port: 6543\n  extra: yes", 1)
	if o := mustOpen(t, YAML, edited, k); !strings.Contains(string(o.Plaintext()), "port: 6543") {
		t.Error("edit lost")
	}
	// A selected value added in plaintext is refused until sealed.
	added := strings.Replace(out, "port: 5432", "port: 5432\n  token: injected", 1)
	if _, err := open(YAML, added, k); !errors.Is(err, ErrPlaintextValue) {
		t.Fatalf("added plaintext token: %v", err)
	}
	r2 := seal(t, YAML, "", "", added, k)
	if r2.Sealed != 1 || r2.Kept != 2 {
		t.Errorf("re-seal: sealed %d kept %d", r2.Sealed, r2.Kept)
	}
	// The values sealed before keep their sealed form.
	for _, v := range sealedValues(out) {
		if !strings.Contains(string(r2.Data), v) {
			t.Errorf("re-seal changed %s", v)
		}
	}
	mustOpen(t, YAML, string(r2.Data), k)
	// The selection cannot change on a sealed file.
	if _, err := Seal(ctx, r2.Data, Options{Format: YAML, Only: "^x$", Unwrappers: []envelope.Unwrapper{k}}); err == nil {
		t.Error("selection changed")
	}
	// Nor can it be changed in the metadata: the MAC covers it.
	widened := strings.Replace(string(r2.Data), "only: ^(password|token)$", "only: ^password$", 1)
	if _, err := open(YAML, widened, k); !errors.Is(err, ErrIntegrity) {
		t.Errorf("changed selection: %v", err)
	}
	// .env: the variable name is the key.
	er := seal(t, Dotenv, "e.env", "PASS", "USER=app\nDB_PASS=pw\n", k)
	if !strings.Contains(string(er.Data), "USER=app\nDB_PASS=ENC[") {
		t.Errorf(".env --only:\n%s", er.Data)
	}
}

func TestTamper(t *testing.T) {
	k := newKey(t, "k")
	in := "a: one\nb: two\nc:\n  d: three\n"
	out := string(seal(t, YAML, "f.yaml", "", in, k).Data)
	vals := sealedValues(out)
	if len(vals) != 3 {
		t.Fatalf("%d sealed values", len(vals))
	}
	other := string(seal(t, YAML, "g.yaml", "", in, k).Data)
	flip := func(v string) string {
		i := len(valuePrefixV1) + 5
		c := byte('A')
		if v[i] == 'A' {
			c = 'B'
		}
		return v[:i] + string(c) + v[i+1:]
	}
	cases := map[string]struct {
		doc  string
		want error
	}{
		"flip":            {strings.Replace(out, vals[0], flip(vals[0]), 1), ErrIntegrity},
		"swap":            {strings.NewReplacer(vals[0], vals[1], vals[1], vals[0]).Replace(out), ErrIntegrity},
		"remove":          {strings.Replace(out, "b: "+vals[1]+"\n", "", 1), ErrIntegrity},
		"duplicate":       {strings.Replace(out, "a: ", "e: "+vals[0]+"\na: ", 1), ErrIntegrity},
		"added plain":     {strings.Replace(out, "a: ", "e: new\na: ", 1), ErrPlaintextValue},
		"from other file": {strings.Replace(out, vals[0], sealedValues(other)[0], 1), ErrIntegrity},
		"move to nested":  {strings.NewReplacer("a: "+vals[0], "a: "+vals[2], "d: "+vals[2], "d: "+vals[0]).Replace(out), ErrIntegrity},
		"truncated":       {strings.Replace(out, vals[0], vals[0][:len(vals[0])-1], 1), ErrMalformedValue},
		"future value":    {strings.Replace(out, vals[0], strings.Replace(vals[0], ":v1,", ":v9,", 1), 1), ErrMalformedValue},
		"bad mac":         {regexp.MustCompile(`mac: \S+`).ReplaceAllString(out, "mac: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), ErrIntegrity},
		"new context":     {strings.Replace(out, "file: f.yaml", "file: g.yaml", 1), envelope.ErrWrongKey},
		"future format":   {strings.Replace(out, "version: 1", "version: 2", 1), ErrMalformed},
		"unknown field":   {strings.Replace(out, "version: 1", "version: 1\n  extra: 1", 1), ErrMalformed},
		"no keys":         {regexp.MustCompile(`(?s)keys:.*mac:`).ReplaceAllString(out, "keys: []\n  mac:"), ErrMalformed},
		"unsealed":        {in, ErrNotSealed},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if c.doc == out {
				t.Fatal("the test did not change the file")
			}
			_, err := open(YAML, c.doc, k)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			t.Log(err)
		})
	}
	// A tampered file is not laundered by sealing it again.
	if _, err := Seal(ctx, []byte(cases["remove"].doc), Options{Format: YAML, Unwrappers: []envelope.Unwrapper{k}}); !errors.Is(err, ErrIntegrity) {
		t.Errorf("re-seal of a tampered file: %v", err)
	}
	// Another key cannot open the file.
	if _, err := open(YAML, out, newKey(t, "k")); !errors.Is(err, envelope.ErrWrongKey) {
		t.Errorf("wrong key: %v", err)
	}
	// The same data key under another format is refused too (the format is
	// in the MAC): a .env line would not parse anyway, so only check Name.
	if _, err := Open(ctx, []byte(out), Options{Format: YAML, Name: "g.yaml", Unwrappers: []envelope.Unwrapper{k}}); !errors.Is(err, ErrIntegrity) {
		t.Errorf("name mismatch: %v", err)
	}
}

func TestReseal(t *testing.T) {
	k := newKey(t, "k")
	out := string(seal(t, Dotenv, "a.env", "", "A=1\nB=2\nC=3\n", k).Data)
	o := mustOpen(t, Dotenv, out, k)
	same, err := o.Reseal(o.Plaintext())
	if err != nil || string(same) != out {
		t.Fatalf("reseal of an unchanged plaintext changed the file (%v):\n%s\n%s", err, same, out)
	}
	edited, err := o.Reseal([]byte("A=1\nB=changed\nD=4\n"))
	if err != nil {
		t.Fatal(err)
	}
	old, now := sealedValues(out), sealedValues(string(edited))
	if len(now) != 3 || now[0] != old[0] || now[1] == old[1] {
		t.Errorf("reseal: %v from %v", now, old)
	}
	o2 := mustOpen(t, Dotenv, string(edited), k)
	if got := string(o2.Plaintext()); got != "A=1\nB=changed\nD=4\n" {
		t.Errorf("got %q", got)
	}
	// A sealed value pasted from elsewhere is refused.
	if _, err := o.Reseal([]byte("A=" + old[1] + "\n")); !errors.Is(err, ErrIntegrity) {
		t.Errorf("pasted value: %v", err)
	}
	if _, err := o.Reseal([]byte("A=1\nA=2\n")); !errors.Is(err, ErrMalformed) {
		t.Errorf("duplicate: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	k := newKey(t, "k")
	cases := []struct {
		f  Format
		in string
	}{
		{YAML, "a: [1, 2"},
		{YAML, "- a\n- b\n"},
		{YAML, ""},
		{YAML, "a: 1\na: 2\n"},
		{YAML, "? [a]\n: 1\n"},
		{YAML, "coffer: 1\na: b\n"},
		{YAML, "apiVersion: v1\nkind: Secret\ndata: [a]\n"},
		{YAML, "a: ENC[coffer:v1,AAAA]\n"},
		{JSON, `{"a": 1`},
		{JSON, `[1, 2]`},
		{JSON, `{"a": 1, "a": 2}`},
		{JSON, `{"a": 1} {}`},
		{JSON, `{"coffer": "x"}`},
		{JSON, strings.Repeat("[", 2000) + strings.Repeat("]", 2000)},
		{Dotenv, "just words\n"},
		{Dotenv, "1X=2\n"},
		{Dotenv, "A=\"open\n"},
		{Dotenv, "A='x' y\n"},
		{Dotenv, "A=1\nA=2\n"},
		{Dotenv, "A=1\n# coffer: {\n"},
		{"toml", "a = 1"},
	}
	for _, c := range cases {
		_, err := Seal(ctx, []byte(c.in), Options{Format: c.f, Name: "x", Wrapper: k, Unwrappers: []envelope.Unwrapper{k}})
		if err == nil {
			t.Errorf("%s %q: sealed", c.f, c.in)
			continue
		}
		t.Logf("%s %.30q: %v", c.f, c.in, err)
		if _, err := Open(ctx, []byte(c.in), Options{Format: c.f, Unwrappers: []envelope.Unwrapper{k}}); err == nil {
			t.Errorf("%s %q: opened", c.f, c.in)
		}
	}
}

func TestFormatOf(t *testing.T) {
	for name, want := range map[string]Format{
		"a.yaml": YAML, "dir/b.YML": YAML, "c.json": JSON, ".env": Dotenv, ".env.local": Dotenv,
		"app.sealed.env": Dotenv, "prod.env.sealed": Dotenv,
	} {
		if got, err := FormatOf(name); got != want || err != nil {
			t.Errorf("FormatOf(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := FormatOf("a.toml"); err == nil {
		t.Error("a.toml has a format")
	}
}

func FuzzParseValue(f *testing.F) {
	k := newKey(f, "k")
	out := string(seal(f, Dotenv, "a", "", "A=hello\n", k).Data)
	f.Add(sealedValues(out)[0])
	f.Add("ENC[coffer:v1,]")
	f.Add("ENC[coffer:v2,AAAA]")
	f.Add("ENC[coffer:v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("ENC[sops:AAA]")
	f.Fuzz(func(t *testing.T, s string) {
		nonce, sealed, err := ParseValue(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedValue) {
				t.Fatalf("error %v does not wrap ErrMalformedValue", err)
			}
			return
		}
		if len(nonce) != nonceSize || len(sealed) < tagSize+1 {
			t.Fatalf("parsed %d-byte nonce, %d sealed bytes", len(nonce), len(sealed))
		}
		if again := formatValue(append(append([]byte{}, nonce...), sealed...)); again != s {
			t.Fatalf("not canonical: %q re-encodes as %q", s, again)
		}
	})
}

// FuzzOpen feeds damaged sealed files of every format to Open and Seal:
// they must fail cleanly, never panic.
func FuzzOpen(f *testing.F) {
	k := newKey(f, "k")
	for _, c := range []struct {
		f  Format
		in string
	}{{YAML, yamlIn}, {YAML, manifestIn}, {JSON, jsonIn}, {Dotenv, "A=1\nexport B='x' # c\n"}} {
		f.Add(string(c.f), string(seal(f, c.f, "a", "", c.in, k).Data))
	}
	f.Fuzz(func(t *testing.T, format, doc string) {
		ff, err := ParseFormat(format)
		if err != nil {
			return
		}
		opts := Options{Format: ff, Name: "a", Wrapper: k, Unwrappers: []envelope.Unwrapper{k}}
		if o, err := Open(ctx, []byte(doc), opts); err == nil {
			if _, err := o.Reseal(o.Plaintext()); err != nil {
				t.Fatalf("reseal of an opened file: %v", err)
			}
			o.Close()
		}
		_, _ = Seal(ctx, []byte(doc), opts)
	})
}

func TestMultiDocumentYAML(t *testing.T) {
	in := `base: &b
  pw: one
ref: *b
---
other: two
`
	out, k := roundTrip(t, YAML, in, 2, []string{"one", "two"}, []string{"&b", "ref: *b", "---\nother: ENC["})
	o := mustOpen(t, YAML, out, k)
	var paths []string
	for _, v := range o.Values() {
		paths = append(paths, v.Path)
	}
	if strings.Join(paths, ",") != "[doc 0] base.pw,[doc 1] other" {
		t.Errorf("paths %v", paths)
	}
	// Documents are bound to their index: swapping them breaks the values.
	vals := sealedValues(out)
	a, b := vals[0], vals[1]
	if _, err := open(YAML, strings.NewReplacer(a, b, b, a).Replace(out), k); !errors.Is(err, ErrIntegrity) {
		t.Errorf("values swapped across documents: %v", err)
	}
}
