package envelope

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cofferkms/coffer/envelope/internal/format"
)

// LocalType is the stanza type of a LocalKey.
const LocalType = "local"

// LocalKey is a key encryption key held by the process: a Wrapper and an
// Unwrapper with no server. It serves tests, and offline setups where the
// key is kept elsewhere (an HSM export, a sealed file). A wrapped key is
// nonce (12) || AES-256-GCM(kek, dataKey, aad) with aad = "coffer envelope
// local v1" || 0x00 || name || canonical encryption context.
type LocalKey struct {
	name    string
	version uint32
	aead    cipher.AEAD
}

// NewLocalKey returns a local key named name (1..255 bytes, stored in the
// stanza's KeyID) from 32 bytes of key material. The key is copied.
func NewLocalKey(name string, version uint32, key []byte) (*LocalKey, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("envelope: local key is %d bytes, want 32", len(key))
	}
	if name == "" || len(name) > format.MaxKeyIDLen {
		return nil, errors.New("envelope: local key name must be 1..255 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &LocalKey{name: name, version: version, aead: aead}, nil
}

// GenerateLocalKey returns a new random local key, for tests.
func GenerateLocalKey(name string) (*LocalKey, error) {
	key := make([]byte, 32)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return NewLocalKey(name, 1, key)
}

// Name returns the key's name.
func (k *LocalKey) Name() string { return k.name }

func (k *LocalKey) aad(ec map[string]string) ([]byte, error) {
	aad := append([]byte("coffer envelope local v1\x00"), k.name...)
	return format.AppendContext(aad, ec)
}

// Wrap implements Wrapper.
func (k *LocalKey) Wrap(_ context.Context, dataKey []byte, ec map[string]string) ([]Stanza, error) {
	aad, err := k.aad(ec)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(dataKey)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	body := k.aead.Seal(nonce, nonce, dataKey, aad)
	return []Stanza{{Type: LocalType, KeyID: k.name, KeyVersion: k.version, Body: body}}, nil
}

// Unwrap implements Unwrapper: it opens the first stanza of its name and
// version.
func (k *LocalKey) Unwrap(_ context.Context, stanzas []Stanza, ec map[string]string) ([]byte, error) {
	aad, err := k.aad(ec)
	if err != nil {
		return nil, err
	}
	for _, s := range stanzas {
		if s.Type != LocalType || s.KeyID != k.name || s.KeyVersion != k.version {
			continue
		}
		ns := k.aead.NonceSize()
		if len(s.Body) < ns+k.aead.Overhead() {
			return nil, fmt.Errorf("local key %q: wrapped key is too short", k.name)
		}
		key, err := k.aead.Open(nil, s.Body[:ns], s.Body[ns:], aad)
		if err != nil {
			return nil, fmt.Errorf("local key %q: the wrapped data key does not authenticate (altered header, or another encryption context)", k.name)
		}
		return key, nil
	}
	return nil, fmt.Errorf("local key %q v%d: %w", k.name, k.version, ErrNoMatch)
}
