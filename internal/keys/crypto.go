package keys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/cofferkms/coffer/internal/ciphertext"
)

// Limits of the cryptographic operations.
const (
	// MaxPlaintext is the largest plaintext Encrypt accepts; larger data
	// belongs in envelope encryption.
	MaxPlaintext = 64 << 10
	// MaxDataKeyBytes and MaxRandomBytes bound generated keys and random
	// strings.
	MaxDataKeyBytes = 1024
	MaxRandomBytes  = 1024
	// DefaultDataKeyBytes is an AES-256 key.
	DefaultDataKeyBytes = 32
)

func newGCM(material []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(material)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Sealed is the result of an encryption.
type Sealed struct {
	Ciphertext []byte
	KeyID      string
	KeyVersion uint32
}

// Opened is the result of a decryption.
type Opened struct {
	Plaintext  []byte
	KeyID      string
	KeyVersion uint32
}

// usable reports whether k may encrypt or decrypt.
func usable(k *key) error {
	switch k.rec.State {
	case StateEnabled:
		return nil
	case StateDisabled:
		return fmt.Errorf("%w: key %s is disabled; enable it to use it", ErrDisabled, k.rec.ID)
	case StatePendingDeletion:
		return fmt.Errorf("%w: key %s is scheduled for deletion on %s and cannot be used; cancel the deletion to use it again",
			ErrPendingDeletion, k.rec.ID, k.rec.DeletionDate.Format("2006-01-02T15:04:05Z07:00"))
	default:
		return notDeleted(&k.rec)
	}
}

// Encrypt seals plaintext under the primary version of the key named by ref,
// binding the encryption context ec.
func (s *Service) Encrypt(ctx context.Context, ref string, plaintext []byte, ec map[string]string) (Sealed, error) {
	if len(plaintext) > MaxPlaintext {
		return Sealed{}, fmt.Errorf("%w: %d bytes; Encrypt takes at most %d bytes. For larger data use envelope encryption: generate a data key (coffer kms datakey) and encrypt locally with it",
			ErrTooLarge, len(plaintext), MaxPlaintext)
	}
	h, err := s.resolve(ctx, ref)
	if err != nil {
		return Sealed{}, err
	}
	return s.seal(ctx, h, plaintext, ec)
}

func (s *Service) seal(ctx context.Context, h *handle, plaintext []byte, ec map[string]string) (Sealed, error) {
	k, err := s.primaryFor(ctx, h)
	if err != nil {
		return Sealed{}, err
	}
	aead := k.aeads[k.rec.Primary-1] // not nil: primaryFor checked
	hdr := ciphertext.Header{KeyID: k.raw, KeyVersion: k.rec.Primary}
	// One buffer holds the AAD scratch and the output, so Encrypt allocates
	// once for the ciphertext.
	out := make([]byte, 0, ciphertext.Overhead+len(plaintext))
	out = ciphertext.AppendHeader(out, hdr)
	var scratch [256]byte
	aad, err := ciphertext.AppendContext(append(scratch[:0], out...), ec)
	if err != nil {
		return Sealed{}, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	nonce := out[ciphertext.HeaderSize : ciphertext.HeaderSize+ciphertext.NonceSize]
	rand.Read(nonce)
	out = aead.Seal(out[:ciphertext.HeaderSize+ciphertext.NonceSize], nonce, plaintext, aad)
	return Sealed{Ciphertext: out, KeyID: k.rec.ID, KeyVersion: k.rec.Primary}, nil
}

// Decrypt opens a ciphertext. The ciphertext names its key and version;
// expectRef, when not empty, must name the same key.
func (s *Service) Decrypt(ctx context.Context, ct []byte, ec map[string]string, expectRef string) (Opened, error) {
	p, err := ciphertext.Parse(ct)
	if err != nil {
		return Opened{}, fmt.Errorf("%w: %v", ErrInvalidCiphertext, err)
	}
	id := uuid.UUID(p.KeyID).String()
	v, ok := s.keys.Load(id)
	if !ok {
		return Opened{}, fmt.Errorf("%w: the ciphertext names key %s, which does not exist on this server", ErrNotFound, id)
	}
	k := v.(*handle).cur.Load()
	if expectRef != "" {
		want, err := s.resolve(ctx, expectRef)
		if err != nil {
			return Opened{}, err
		}
		if want.cur.Load().rec.ID != id {
			return Opened{}, fmt.Errorf("%w: the ciphertext was made with key %s, not %s", ErrInvalidCiphertext, id, expectRef)
		}
	}
	if err := usable(k); err != nil {
		return Opened{}, err
	}
	if int(p.KeyVersion) > len(k.aeads) || k.aeads[p.KeyVersion-1] == nil {
		return Opened{}, fmt.Errorf("%w: key %s has no version %d", ErrInvalidCiphertext, id, p.KeyVersion)
	}
	var scratch [256]byte
	aad, err := ciphertext.AppendContext(append(scratch[:0], p.AADPrefix...), ec)
	if err != nil {
		return Opened{}, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	plain, err := k.aeads[p.KeyVersion-1].Open(nil, p.Nonce, p.Sealed, aad)
	if err != nil {
		return Opened{}, fmt.Errorf("%w: authentication failed: the ciphertext was altered, or the encryption context differs from the one used to encrypt", ErrInvalidCiphertext)
	}
	return Opened{Plaintext: plain, KeyID: id, KeyVersion: p.KeyVersion}, nil
}

// ReEncrypt decrypts ct and encrypts the plaintext again under destRef (the
// source key when empty) with destCtx (the source context when nil). The
// plaintext never leaves the server and is wiped afterwards.
func (s *Service) ReEncrypt(ctx context.Context, ct []byte, srcCtx map[string]string, destRef string, destCtx map[string]string) (Opened, Sealed, error) {
	opened, err := s.Decrypt(ctx, ct, srcCtx, "")
	if err != nil {
		return Opened{}, Sealed{}, err
	}
	defer clear(opened.Plaintext)
	if destRef == "" {
		destRef = opened.KeyID
	}
	if destCtx == nil {
		destCtx = srcCtx
	}
	h, err := s.resolve(ctx, destRef)
	if err != nil {
		return Opened{}, Sealed{}, err
	}
	sealed, err := s.seal(ctx, h, opened.Plaintext, destCtx)
	src := opened
	src.Plaintext = nil
	return src, sealed, err
}

// GenerateDataKey returns a fresh random key of n bytes (0 means 32) and its
// copy encrypted under ref.
func (s *Service) GenerateDataKey(ctx context.Context, ref string, n int, ec map[string]string) ([]byte, Sealed, error) {
	if n == 0 {
		n = DefaultDataKeyBytes
	}
	if n < 1 || n > MaxDataKeyBytes {
		return nil, Sealed{}, fmt.Errorf("%w: data key size must be 1..%d bytes, not %d", ErrInvalidArgument, MaxDataKeyBytes, n)
	}
	h, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, Sealed{}, err
	}
	dk := make([]byte, n)
	rand.Read(dk)
	sealed, err := s.seal(ctx, h, dk, ec)
	if err != nil {
		clear(dk)
		return nil, Sealed{}, err
	}
	return dk, sealed, nil
}

// GenerateRandom returns n (1..1024) random bytes.
func GenerateRandom(n int) ([]byte, error) {
	if n < 1 || n > MaxRandomBytes {
		return nil, fmt.Errorf("%w: bytes must be 1..%d, not %d", ErrInvalidArgument, MaxRandomBytes, n)
	}
	b := make([]byte, n)
	rand.Read(b)
	return b, nil
}

// IsClientError reports whether err is the caller's fault (a 4xx).
func IsClientError(err error) bool {
	for _, e := range []error{ErrInvalidArgument, ErrNotFound, ErrAliasExists, ErrAliasNotFound, ErrDisabled,
		ErrPendingDeletion, ErrDeleted, ErrInvalidState, ErrInvalidCiphertext, ErrTooLarge} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
