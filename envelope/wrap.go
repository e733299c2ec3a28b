package envelope

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
)

// DataKeySize is the size of a data key: AES-256.
const DataKeySize = 32

// A Stanza is one wrapped copy of a data key, as stored in a header.
type Stanza struct {
	// Type names the kind of wrapper that made it: "coffer", "local", ...
	// At most 32 bytes of printable ASCII.
	Type string
	// KeyID and KeyVersion name the key that wraps the data key (for
	// Coffer, its key id and version). KeyID is at most 255 bytes.
	KeyID      string
	KeyVersion uint32
	// Body is the wrapped data key, 1..4096 bytes, opaque to this package.
	Body []byte
}

// A Wrapper wraps data keys: it returns the wrapped copies of dataKey,
// bound to the encryption context ec, to store in a header. Wrappers are
// the "recipients" of a file; the Coffer KMS, a local key and a
// CachingWrapper are wrappers. Wrap must not keep dataKey.
type Wrapper interface {
	Wrap(ctx context.Context, dataKey []byte, ec map[string]string) ([]Stanza, error)
}

// A Generator is a Wrapper that can also produce the data key, as the
// Coffer KMS does with GenerateDataKey (one round trip, and the key comes
// from the server's random source). Encrypt uses GenerateDataKey when its
// wrapper has it; otherwise it draws the key from crypto/rand and calls
// Wrap. The caller owns the returned key and zeroes it after use.
type Generator interface {
	Wrapper
	GenerateDataKey(ctx context.Context, ec map[string]string) (dataKey []byte, stanzas []Stanza, err error)
}

// An Unwrapper recovers a data key from the stanzas of a header, bound to
// the header's encryption context. It returns an error wrapping
// ErrNoMatch when no stanza is for it, so that the next unwrapper is tried.
type Unwrapper interface {
	Unwrap(ctx context.Context, stanzas []Stanza, ec map[string]string) ([]byte, error)
}

// ErrNoMatch is returned (wrapped) by an Unwrapper that has no key for any
// of the stanzas.
var ErrNoMatch = errors.New("no wrapped key matches")

// generate returns a fresh data key and its stanzas from w.
func generate(ctx context.Context, w Wrapper, ec map[string]string) ([]byte, []Stanza, error) {
	if g, ok := w.(Generator); ok {
		key, st, err := g.GenerateDataKey(ctx, ec)
		if err != nil {
			return nil, nil, err
		}
		if len(key) != DataKeySize {
			clear(key)
			return nil, nil, fmt.Errorf("envelope: wrapper returned a %d-byte data key, want %d", len(key), DataKeySize)
		}
		return key, st, nil
	}
	key := make([]byte, DataKeySize)
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

// Multi returns a wrapper that wraps each data key with every one of ws,
// in order, so that any of them can decrypt: for example the production
// Coffer key and a recovery key on a second server. The data key comes
// from the first wrapper when it is a Generator.
func Multi(ws ...Wrapper) Wrapper { return multi(ws) }

type multi []Wrapper

func (m multi) Wrap(ctx context.Context, dataKey []byte, ec map[string]string) ([]Stanza, error) {
	if len(m) == 0 {
		return nil, errors.New("envelope: Multi needs at least one wrapper")
	}
	var all []Stanza
	for _, w := range m {
		st, err := w.Wrap(ctx, dataKey, ec)
		if err != nil {
			return nil, err
		}
		all = append(all, st...)
	}
	return all, nil
}

func (m multi) GenerateDataKey(ctx context.Context, ec map[string]string) ([]byte, []Stanza, error) {
	if len(m) == 0 {
		return nil, nil, errors.New("envelope: Multi needs at least one wrapper")
	}
	key, all, err := generate(ctx, m[0], ec)
	if err != nil {
		return nil, nil, err
	}
	for _, w := range m[1:] {
		st, err := w.Wrap(ctx, key, ec)
		if err != nil {
			clear(key)
			return nil, nil, err
		}
		all = append(all, st...)
	}
	return key, all, nil
}

// unwrap tries each unwrapper in turn and returns the first data key.
func unwrap(ctx context.Context, us []Unwrapper, stanzas []Stanza, ec map[string]string) ([]byte, error) {
	if len(us) == 0 {
		return nil, errors.New("envelope: no unwrapper given")
	}
	var errs []error
	for _, u := range us {
		key, err := u.Unwrap(ctx, stanzas, ec)
		if err == nil {
			if len(key) != DataKeySize {
				clear(key)
				return nil, fmt.Errorf("envelope: unwrapper returned a %d-byte data key, want %d", len(key), DataKeySize)
			}
			return key, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, &UnwrapError{Stanzas: stanzas, Errs: errs}
}

// UnwrapError reports that no unwrapper could recover the data key. It
// holds each unwrapper's error; errors.Is and errors.As look into them.
type UnwrapError struct {
	Stanzas []Stanza
	Errs    []error
}

func (e *UnwrapError) Error() string {
	names := make([]string, len(e.Stanzas))
	for i, s := range e.Stanzas {
		names[i] = fmt.Sprintf("%s %s v%d", s.Type, s.KeyID, s.KeyVersion)
	}
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("cannot unwrap the data key (wrapped for: %s): %s",
		strings.Join(names, "; "), strings.Join(msgs, "; "))
}

// Unwrap returns the unwrappers' errors.
func (e *UnwrapError) Unwrap() []error { return e.Errs }

// Is makes errors.Is(err, ErrWrongKey) true.
func (e *UnwrapError) Is(target error) bool {
	return target == ErrWrongKey
}

// ErrWrongKey is matched (errors.Is) by the error of Decrypt when no
// unwrapper could recover the data key.
var ErrWrongKey = errors.New("wrong key")
