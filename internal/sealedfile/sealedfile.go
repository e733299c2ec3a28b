package sealedfile

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/cofferkms/coffer/envelope"
	"github.com/cofferkms/coffer/internal/ciphertext"
)

// Version is the sealed file format version.
const Version = 1

// MaxFileSize bounds the files this package reads (16 MiB).
const MaxFileSize = 16 << 20

// A Format is a kind of file.
type Format string

// The formats.
const (
	YAML   Format = "yaml"
	JSON   Format = "json"
	Dotenv Format = "env"
)

// ParseFormat returns the format named s: yaml (or yml), json or env.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "yaml", "yml":
		return YAML, nil
	case "json":
		return JSON, nil
	case "env", "dotenv":
		return Dotenv, nil
	}
	return "", fmt.Errorf("unknown format %q: want yaml, json or env", s)
}

// FormatOf guesses the format of a file from its name: *.yaml and *.yml
// are YAML, *.json JSON, and .env, .env.*, *.env and *.env.* .env files.
func FormatOf(name string) (Format, error) {
	base := strings.ToLower(filepath.Base(name))
	switch {
	case strings.HasSuffix(base, ".yaml"), strings.HasSuffix(base, ".yml"):
		return YAML, nil
	case strings.HasSuffix(base, ".json"):
		return JSON, nil
	case base == ".env", strings.HasPrefix(base, ".env."), strings.HasSuffix(base, ".env"), strings.Contains(base, ".env."):
		return Dotenv, nil
	}
	return "", fmt.Errorf("cannot tell the format of %s from its name (want .yaml, .yml, .json or .env)", name)
}

// Errors, for errors.Is; every error also names the problem in its message.
var (
	// ErrNotSealed: the file has no coffer metadata.
	ErrNotSealed = errors.New("not a sealed file")
	// ErrIntegrity: a sealed value does not authenticate, or the file's MAC
	// does not match its sealed values: a value was altered, swapped,
	// moved from another file, removed or added.
	ErrIntegrity = errors.New("sealed file integrity check failed")
	// ErrPlaintextValue: a value the file's selection says is sealed is
	// plaintext (added after sealing, and not sealed since).
	ErrPlaintextValue = errors.New("value is not sealed")
	// ErrMalformed: the file is not valid in its format, or its coffer
	// metadata is invalid.
	ErrMalformed = errors.New("malformed file")
)

// Options configure Seal and Open.
type Options struct {
	// Format of the file; required.
	Format Format
	// Name is the "file" entry of the encryption context of a new file
	// (Seal); for an already sealed file it must be empty or equal the
	// stored one. Open checks it against the file when it is not empty.
	Name string
	// Only, when not empty, is a regular expression (Go syntax) on the
	// mapping keys and variable names: a value is sealed when a key on its
	// path matches. Empty seals every value. It is stored in the file; for
	// an already sealed file it must be empty or equal the stored one.
	Only string
	// Wrapper makes and wraps the data key of a new file (Seal).
	Wrapper envelope.Wrapper
	// Unwrappers recover the data key of a sealed file (Seal of an already
	// sealed file, Open), tried in order.
	Unwrappers []envelope.Unwrapper
}

// SealResult describes what Seal did.
type SealResult struct {
	// Data is the sealed file.
	Data []byte
	// New reports a new data key (the file was not sealed before).
	New bool
	// Sealed is the number of values sealed now, Kept the number that were
	// already sealed, Plain the number left in plaintext (not selected;
	// nulls are not counted).
	Sealed, Kept, Plain int
	// Context is the file's encryption context.
	Context map[string]string
}

// metadata is the coffer block stored in a sealed file.
type metadata struct {
	Version int               `json:"version" yaml:"version"`
	Context map[string]string `json:"context" yaml:"context"`
	Only    string            `json:"only,omitempty" yaml:"only,omitempty"`
	Salt    string            `json:"salt" yaml:"salt"`
	Keys    []metaKey         `json:"keys" yaml:"keys"`
	MAC     string            `json:"mac" yaml:"mac"`
}

type metaKey struct {
	Type       string `json:"type" yaml:"type"`
	KeyID      string `json:"key_id" yaml:"key_id"`
	KeyVersion uint32 `json:"key_version" yaml:"key_version"`
	Body       string `json:"body" yaml:"body"`
}

const (
	saltSize    = 32
	maxStanzas  = 16
	metaKeyName = "coffer"
)

// check validates m and decodes its binary fields.
func (m *metadata) check() (salt, mac []byte, stanzas []envelope.Stanza, err error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: coffer metadata: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	if m.Version != Version {
		if m.Version > Version {
			return nil, nil, nil, bad("format version %d is newer than this Coffer reads (%d): upgrade Coffer", m.Version, Version)
		}
		return nil, nil, nil, bad("format version %d is not supported (want %d)", m.Version, Version)
	}
	if _, err := ciphertext.AppendContext(nil, m.Context); err != nil {
		return nil, nil, nil, bad("%v", err)
	}
	if _, err := regexp.Compile(m.Only); err != nil {
		return nil, nil, nil, bad("invalid only: %v", err)
	}
	if salt, err = base64.StdEncoding.DecodeString(m.Salt); err != nil || len(salt) != saltSize {
		return nil, nil, nil, bad("salt is not %d bytes of base64", saltSize)
	}
	if mac, err = base64.StdEncoding.DecodeString(m.MAC); err != nil || len(mac) != sha256.Size {
		return nil, nil, nil, bad("mac is not %d bytes of base64", sha256.Size)
	}
	if len(m.Keys) == 0 || len(m.Keys) > maxStanzas {
		return nil, nil, nil, bad("%d wrapped keys; want 1..%d", len(m.Keys), maxStanzas)
	}
	for i, k := range m.Keys {
		body, err := base64.StdEncoding.DecodeString(k.Body)
		if err != nil || len(body) == 0 || len(body) > 4096 {
			return nil, nil, nil, bad("wrapped key %d: body is not 1..4096 bytes of base64", i+1)
		}
		if k.Type == "" || len(k.KeyID) > 255 {
			return nil, nil, nil, bad("wrapped key %d: missing type or key id too long", i+1)
		}
		stanzas = append(stanzas, envelope.Stanza{Type: k.Type, KeyID: k.KeyID, KeyVersion: k.KeyVersion, Body: body})
	}
	return salt, mac, stanzas, nil
}

// A slot is one value of a document.
type slot struct {
	path  path
	value string // the current text: a sealed value, or the plaintext as written
	// null values (YAML and JSON null) are never sealed.
	null bool
	// plain returns the typed plaintext of an unsealed value.
	plain func() ([]byte, error)
	// setSealed replaces the value with a sealed value.
	setSealed func(string)
	// setPlain restores a typed plaintext.
	setPlain func([]byte) error
}

func (s *slot) sealed() bool { return IsSealedValue(s.value) }

// A document is a parsed file of one format.
type document interface {
	// slots returns the values, in document order.
	slots() ([]*slot, error)
	// meta returns the coffer metadata, or nil if there is none.
	meta() (*metadata, error)
	setMeta(*metadata) error
	dropMeta()
	encode() ([]byte, error)
	// secrets returns the "namespace/name" of the Secret manifests.
	secrets() []string
}

func parse(f Format, data []byte) (d document, err error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: the file is %d bytes; at most %d are supported", ErrMalformed, len(data), MaxFileSize)
	}
	defer func() {
		if r := recover(); r != nil {
			d, err = nil, fmt.Errorf("%w: cannot parse the %s file: %v", ErrMalformed, f, r)
		}
	}()
	switch f {
	case YAML:
		return parseYAML(data)
	case JSON:
		return parseJSON(data)
	case Dotenv:
		return parseDotenv(data)
	}
	return nil, fmt.Errorf("unknown format %q", f)
}

// keys are a file's derived keys.
type keys struct {
	aead   cipher.AEAD
	macKey []byte
	ctx    []byte // canonical encryption context
	meta   *metadata
	format Format
	only   *regexp.Regexp
}

const (
	infoValueKey = "coffer sealed file v1 value key"
	infoMACKey   = "coffer sealed file v1 mac key"
	aadPrefix    = "coffer sealed file v1 value\x00"
	macPrefix    = "coffer sealed file v1 mac\x00"
)

func deriveKeys(f Format, dataKey, salt []byte, m *metadata) (*keys, error) {
	vk, err := hkdf.Key(sha256.New, dataKey, salt, infoValueKey, 32)
	if err != nil {
		return nil, err
	}
	defer clear(vk)
	mk, err := hkdf.Key(sha256.New, dataKey, salt, infoMACKey, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(vk)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	ctx, err := ciphertext.AppendContext(nil, m.Context)
	if err != nil {
		return nil, err
	}
	k := &keys{aead: aead, macKey: mk, ctx: ctx, meta: m, format: f}
	if m.Only != "" {
		if k.only, err = regexp.Compile(m.Only); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func (k *keys) close() { clear(k.macKey) }

func (k *keys) aad(p path) []byte {
	b := append([]byte(aadPrefix), k.ctx...)
	return append(b, p.encode()...)
}

func (k *keys) seal(p path, typed []byte) (string, error) {
	if len(typed) > maxValueSize+1 {
		return "", fmt.Errorf("%s: the value is %d bytes; at most %d can be sealed", p, len(typed)-1, maxValueSize)
	}
	out := make([]byte, nonceSize, nonceSize+len(typed)+tagSize)
	if _, err := rand.Read(out); err != nil {
		return "", err
	}
	out = k.aead.Seal(out, out[:nonceSize], typed, k.aad(p))
	return formatValue(out), nil
}

func (k *keys) open(s *slot) ([]byte, error) {
	nonce, sealed, err := ParseValue(s.value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.path, err)
	}
	pt, err := k.aead.Open(nil, nonce, sealed, k.aad(s.path))
	if err != nil {
		return nil, fmt.Errorf("%w: the sealed value at %s does not authenticate: it was altered, or moved from another key, Secret or file", ErrIntegrity, s.path)
	}
	if len(pt) == 0 {
		return nil, fmt.Errorf("%w: the sealed value at %s is empty", ErrMalformed, s.path)
	}
	return pt, nil
}

// selected reports whether the selection seals the value at p.
func (k *keys) selected(p path) bool {
	return selects(k.only, p)
}

func selects(only *regexp.Regexp, p path) bool {
	if only == nil {
		return true
	}
	return slices.ContainsFunc(p.keys(), only.MatchString)
}

// mac computes the MAC over the sealed values of slots.
func (k *keys) mac(slots []*slot) []byte {
	type entry struct{ path, value []byte }
	var es []entry
	for _, s := range slots {
		if s.sealed() {
			es = append(es, entry{s.path.encode(), []byte(s.value)})
		}
	}
	slices.SortFunc(es, func(a, b entry) int { return bytes.Compare(a.path, b.path) })
	h := hmac.New(sha256.New, k.macKey)
	h.Write([]byte(macPrefix))
	h.Write([]byte(k.format))
	h.Write([]byte{0})
	h.Write(k.ctx)
	var n [binary.MaxVarintLen64]byte
	field := func(b []byte) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
		h.Write(b)
	}
	field([]byte(k.meta.Only))
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(es)))])
	for _, e := range es {
		field(e.path)
		field(e.value)
	}
	return h.Sum(nil)
}

func (k *keys) checkMAC(slots []*slot, want []byte) error {
	if !hmac.Equal(k.mac(slots), want) {
		return fmt.Errorf("%w: the file's MAC does not match its sealed values: a sealed value was removed, added, swapped or altered since the file was sealed", ErrIntegrity)
	}
	return nil
}

// checkDuplicates rejects two values at the same path.
func checkDuplicates(slots []*slot) error {
	seen := make(map[string]bool, len(slots))
	for _, s := range slots {
		k := string(s.path.encode())
		if seen[k] {
			return fmt.Errorf("%w: %s appears twice", ErrMalformed, s.path)
		}
		seen[k] = true
	}
	return nil
}

// generate returns a new data key and its wrapped copies from w.
func generate(ctx context.Context, w envelope.Wrapper, ec map[string]string) ([]byte, []envelope.Stanza, error) {
	if g, ok := w.(envelope.Generator); ok {
		key, st, err := g.GenerateDataKey(ctx, ec)
		if err != nil {
			return nil, nil, err
		}
		if len(key) != envelope.DataKeySize {
			clear(key)
			return nil, nil, fmt.Errorf("the wrapper returned a %d-byte data key, want %d", len(key), envelope.DataKeySize)
		}
		return key, st, nil
	}
	key := make([]byte, envelope.DataKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, nil, err
	}
	st, err := w.Wrap(ctx, key, ec)
	if err != nil {
		clear(key)
		return nil, nil, err
	}
	return key, st, nil
}

// unwrap recovers the data key with the first unwrapper that can.
func unwrap(ctx context.Context, us []envelope.Unwrapper, st []envelope.Stanza, ec map[string]string) ([]byte, error) {
	if len(us) == 0 {
		return nil, errors.New("no unwrapper given")
	}
	var errs []error
	for _, u := range us {
		key, err := u.Unwrap(ctx, st, ec)
		if err == nil {
			if len(key) != envelope.DataKeySize {
				clear(key)
				return nil, fmt.Errorf("the unwrapper returned a %d-byte data key, want %d", len(key), envelope.DataKeySize)
			}
			return key, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, &envelope.UnwrapError{Stanzas: st, Errs: errs}
}

// openKeys unwraps the data key of a sealed file and derives its keys.
func openKeys(ctx context.Context, f Format, m *metadata, us []envelope.Unwrapper) (*keys, []byte, error) {
	salt, mac, stanzas, err := m.check()
	if err != nil {
		return nil, nil, err
	}
	dk, err := unwrap(ctx, us, stanzas, m.Context)
	if err != nil {
		return nil, nil, err
	}
	defer clear(dk)
	k, err := deriveKeys(f, dk, salt, m)
	if err != nil {
		return nil, nil, err
	}
	return k, mac, nil
}

// Seal seals the selected values of a file. A file without coffer
// metadata gets a new data key from opts.Wrapper and an encryption context
// {"file": opts.Name} (plus "namespace" and "name" when it holds exactly
// one Kubernetes Secret). An already sealed file keeps its data key (from
// opts.Unwrappers), its context and selection: its sealed values and MAC
// are checked, and the plaintext values added since are sealed. Seal is
// idempotent.
func Seal(ctx context.Context, data []byte, opts Options) (*SealResult, error) {
	d, err := parse(opts.Format, data)
	if err != nil {
		return nil, err
	}
	slots, err := d.slots()
	if err != nil {
		return nil, err
	}
	if err := checkDuplicates(slots); err != nil {
		return nil, err
	}
	m, err := d.meta()
	if err != nil {
		return nil, err
	}
	res := &SealResult{}
	var k *keys
	if m == nil {
		if opts.Wrapper == nil {
			return nil, errors.New("sealing a new file needs a key (a Wrapper)")
		}
		if opts.Name == "" {
			return nil, errors.New("sealing a new file needs a name for its encryption context")
		}
		if _, err := regexp.Compile(opts.Only); err != nil {
			return nil, fmt.Errorf("invalid selection %q: %v", opts.Only, err)
		}
		for _, s := range slots {
			if s.sealed() {
				return nil, fmt.Errorf("%w: %s is already sealed but the file has no coffer metadata (was it copied from another file?)", ErrIntegrity, s.path)
			}
		}
		ec := map[string]string{"file": opts.Name}
		if secs := d.secrets(); len(secs) == 1 {
			ns, name, _ := strings.Cut(secs[0], "/")
			ec["namespace"], ec["name"] = ns, name
		}
		if _, err := ciphertext.AppendContext(nil, ec); err != nil {
			return nil, err
		}
		dk, stanzas, err := generate(ctx, opts.Wrapper, ec)
		if err != nil {
			return nil, err
		}
		defer clear(dk)
		if len(stanzas) == 0 || len(stanzas) > maxStanzas {
			return nil, fmt.Errorf("the wrapper returned %d wrapped keys; want 1..%d", len(stanzas), maxStanzas)
		}
		salt := make([]byte, saltSize)
		if _, err := rand.Read(salt); err != nil {
			return nil, err
		}
		m = &metadata{Version: Version, Context: ec, Only: opts.Only, Salt: base64.StdEncoding.EncodeToString(salt)}
		for _, s := range stanzas {
			m.Keys = append(m.Keys, metaKey{Type: s.Type, KeyID: s.KeyID, KeyVersion: s.KeyVersion, Body: base64.StdEncoding.EncodeToString(s.Body)})
		}
		if k, err = deriveKeys(opts.Format, dk, salt, m); err != nil {
			return nil, err
		}
		res.New = true
	} else {
		if opts.Only != "" && opts.Only != m.Only {
			return nil, fmt.Errorf("the file was sealed with the selection %q, not %q: unseal it and seal it again to change the selection", m.Only, opts.Only)
		}
		if opts.Name != "" && opts.Name != m.Context["file"] {
			return nil, fmt.Errorf("the file was sealed with the name %q, not %q: unseal it and seal it again to rename it", m.Context["file"], opts.Name)
		}
		var mac []byte
		k, mac, err = openKeys(ctx, opts.Format, m, opts.Unwrappers)
		if err != nil {
			return nil, err
		}
		for _, s := range slots {
			if s.sealed() {
				if _, err := k.open(s); err != nil {
					return nil, err
				}
			}
		}
		if err := k.checkMAC(slots, mac); err != nil {
			return nil, fmt.Errorf("%w (to drop or change sealed values, use 'coffer edit', or unseal and seal again)", err)
		}
	}
	defer k.close()
	for _, s := range slots {
		switch {
		case s.sealed():
			res.Kept++
		case s.null:
		case !k.selected(s.path):
			res.Plain++
		default:
			typed, err := s.plain()
			if err != nil {
				return nil, err
			}
			sv, err := k.seal(s.path, typed)
			clear(typed)
			if err != nil {
				return nil, err
			}
			s.setSealed(sv)
			s.value = sv
			res.Sealed++
		}
	}
	m.MAC = base64.StdEncoding.EncodeToString(k.mac(slots))
	if err := d.setMeta(m); err != nil {
		return nil, err
	}
	if res.Data, err = d.encode(); err != nil {
		return nil, err
	}
	res.Context = m.Context
	return res, nil
}

// A Value is a decrypted value of a file.
type Value struct {
	// Path names the value in the document: "db.password", "DB_PASS",
	// "Secret prod/db: data.password".
	Path string
	// Key is the last mapping key or variable name of the path.
	Key string
	// Value is the plaintext, as text (a Secret's data as raw bytes).
	Value string
	// Sealed reports whether the value was sealed in the file.
	Sealed bool
}

// Opened is a sealed file decrypted in memory.
type Opened struct {
	format    Format
	keys      *keys
	plaintext []byte
	values    []Value
	prev      map[string]prevValue
}

type prevValue struct {
	typed  []byte
	sealed string
}

// Open checks and decrypts a sealed file: the data key is unwrapped (bound
// to the file's encryption context), every sealed value must authenticate
// at its path, the MAC must match, and no value the selection seals may be
// plaintext. Call Close when done.
func Open(ctx context.Context, data []byte, opts Options) (*Opened, error) {
	d, err := parse(opts.Format, data)
	if err != nil {
		return nil, err
	}
	m, err := d.meta()
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("%w: the %s file has no coffer metadata (seal it with 'coffer seal')", ErrNotSealed, opts.Format)
	}
	slots, err := d.slots()
	if err != nil {
		return nil, err
	}
	if err := checkDuplicates(slots); err != nil {
		return nil, err
	}
	if opts.Name != "" && m.Context["file"] != opts.Name {
		return nil, fmt.Errorf("%w: the file was sealed as %q, not %q", ErrIntegrity, m.Context["file"], opts.Name)
	}
	k, mac, err := openKeys(ctx, opts.Format, m, opts.Unwrappers)
	if err != nil {
		return nil, err
	}
	o := &Opened{format: opts.Format, keys: k, prev: make(map[string]prevValue)}
	ok := false
	defer func() {
		if !ok {
			o.Close()
		}
	}()
	typed := make([][]byte, len(slots))
	for i, s := range slots {
		if !s.sealed() {
			continue
		}
		if typed[i], err = k.open(s); err != nil {
			return nil, err
		}
	}
	if err := k.checkMAC(slots, mac); err != nil {
		return nil, err
	}
	for i, s := range slots {
		if typed[i] == nil {
			if !s.null && k.selected(s.path) {
				return nil, fmt.Errorf("%w: %s is plaintext but the file's selection seals it (added after sealing?): run 'coffer seal' on the file to seal it", ErrPlaintextValue, s.path)
			}
			continue
		}
		o.prev[string(s.path.encode())] = prevValue{typed: typed[i], sealed: s.value}
		if err := s.setPlain(typed[i]); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, s.path, err)
		}
	}
	// Values after restoring, so that they read as in the plaintext.
	for i, s := range slots {
		if s.null {
			continue
		}
		v := Value{Path: s.path.String(), Sealed: typed[i] != nil}
		if ks := s.path.keys(); len(ks) > 0 {
			v.Key = ks[len(ks)-1]
		}
		if typed[i] != nil {
			v.Value = typedText(typed[i])
		} else if pt, err := s.plain(); err == nil {
			v.Value = typedText(pt)
		}
		o.values = append(o.values, v)
	}
	d.dropMeta()
	if o.plaintext, err = d.encode(); err != nil {
		return nil, err
	}
	ok = true
	return o, nil
}

// typedText returns the text of a typed plaintext.
func typedText(t []byte) string {
	if len(t) == 0 {
		return ""
	}
	switch t[0] {
	case typeTagged:
		if _, v, ok := bytes.Cut(t[1:], []byte{0}); ok {
			return string(v)
		}
	case typeEnvDouble:
		return envUnquote(string(t[1:]))
	}
	return string(t[1:])
}

// Plaintext returns the document with its values decrypted and the coffer
// metadata removed.
func (o *Opened) Plaintext() []byte { return o.plaintext }

// Values returns the values of the document in order, decrypted.
func (o *Opened) Values() []Value { return o.values }

// Context returns the file's encryption context.
func (o *Opened) Context() map[string]string { return o.keys.meta.Context }

// Reseal seals an edited plaintext of the file (as Plaintext returned it,
// changed) under the same data key, context and selection. A value whose
// plaintext did not change at its path keeps its sealed form, so that a
// diff shows only the values that changed.
func (o *Opened) Reseal(plaintext []byte) ([]byte, error) {
	d, err := parse(o.format, plaintext)
	if err != nil {
		return nil, err
	}
	if m, err := d.meta(); err != nil {
		return nil, err
	} else if m != nil {
		return nil, fmt.Errorf("%w: the edited file holds a %q metadata block; remove it", ErrMalformed, metaKeyName)
	}
	slots, err := d.slots()
	if err != nil {
		return nil, err
	}
	if err := checkDuplicates(slots); err != nil {
		return nil, err
	}
	k := o.keys
	for _, s := range slots {
		switch {
		case s.sealed():
			if _, err := k.open(s); err != nil {
				return nil, err
			}
		case s.null || !k.selected(s.path):
		default:
			typed, err := s.plain()
			if err != nil {
				return nil, err
			}
			sv := ""
			if p, ok := o.prev[string(s.path.encode())]; ok && bytes.Equal(p.typed, typed) {
				sv = p.sealed
			} else if sv, err = k.seal(s.path, typed); err != nil {
				return nil, err
			}
			s.setSealed(sv)
			s.value = sv
		}
	}
	m := *k.meta
	m.MAC = base64.StdEncoding.EncodeToString(k.mac(slots))
	if err := d.setMeta(&m); err != nil {
		return nil, err
	}
	return d.encode()
}

// Close forgets the keys and the plaintext (as far as Go allows: strings
// cannot be cleared).
func (o *Opened) Close() {
	o.keys.close()
	clear(o.plaintext)
	for _, p := range o.prev {
		clear(p.typed)
	}
	o.prev = nil
}

// Typed plaintexts: one type byte, then the payload.
const (
	typeString    = 's' // a string (YAML !!str, JSON string, Secret stringData)
	typeRaw       = 'r' // raw bytes (a Secret's data, decoded from base64)
	typeTagged    = 't' // a YAML scalar of another tag: tag 0x00 text
	typeLiteral   = 'l' // a JSON number or boolean, as written
	typeEnvBare   = 'u' // a .env value written unquoted, as written
	typeEnvSingle = 'q' // a .env value in single quotes, as written inside them
	typeEnvDouble = 'd' // a .env value in double quotes, as written inside them (escapes undecoded)
)

func typed(t byte, s string) []byte {
	b := make([]byte, 0, 1+len(s))
	return append(append(b, t), s...)
}

// IsSealed reports whether data, a file of format f, holds coffer metadata.
func IsSealed(f Format, data []byte) (bool, error) {
	d, err := parse(f, data)
	if err != nil {
		return false, err
	}
	m, err := d.meta()
	return m != nil, err
}
