package keys

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// Pins: a request decides on a key once. An alias is resolved when the
// request is authorized (iam resolves it to the key whose id, other names
// and key policy the decision sees); the operation resolves it again in
// this package. An alias moved in between (UpdateAlias, or a replica
// applying a move) would let the operation act on a key that was never
// decided on. A pin table, carried in the request's context, makes both
// see the same key: the authorizer records each alias it resolved (Pin),
// and resolve uses the recorded key for that alias instead of asking the
// alias index again. The first resolution of an alias in a request wins:
// the later decisions of the same request (batch items, ReEncrypt's
// second key) and the operation all use it. An alias that named no key
// when it was decided on stays unresolved for the request: the decision
// saw no key, so no key policy, and an alias created meanwhile must not
// supply one.

// pinsKey is the context key of a request's pin table.
type pinsKey struct{}

// pinTable maps alias names to the key id each named when the request was
// authorized ("" for an alias that named no key).
type pinTable struct {
	mu sync.Mutex
	m  map[string]string
}

// WithPins returns a copy of ctx carrying a new, empty pin table: Pin
// records into it, and every operation of this package given a context
// derived from it resolves a recorded alias to the recorded key.
func WithPins(ctx context.Context) context.Context {
	return context.WithValue(ctx, pinsKey{}, &pinTable{})
}

func pinsOf(ctx context.Context) *pinTable {
	if ctx == nil {
		return nil
	}
	t, _ := ctx.Value(pinsKey{}).(*pinTable)
	return t
}

// Pin records that alias named the key with id id ("" for no key) when the
// request ctx carries was authorized. The first pin of an alias wins: Pin
// returns the id in effect for alias, which is id unless an earlier Pin of
// the same request recorded another (the caller then decides on that one).
// ok is false, and nothing is recorded, when ctx carries no table or alias
// is no alias name.
func Pin(ctx context.Context, alias, id string) (pinned string, ok bool) {
	t := pinsOf(ctx)
	if t == nil || !strings.HasPrefix(alias, AliasPrefix) {
		return "", false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if prev, found := t.m[alias]; found {
		return prev, true
	}
	if t.m == nil {
		t.m = make(map[string]string, 2)
	}
	t.m[alias] = id
	return id, true
}

// Pinned returns the key id Pin recorded for alias in ctx's table ("" for
// an alias that named no key); found is false when there is none.
func Pinned(ctx context.Context, alias string) (id string, found bool) {
	t := pinsOf(ctx)
	if t == nil {
		return "", false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	id, found = t.m[alias]
	return id, found
}

// resolve finds the handle of a key id or alias for an operation of the
// request ctx carries: an alias pinned in ctx is the pinned key (which
// must still exist), whatever the alias names now.
func (s *Service) resolve(ctx context.Context, ref string) (*handle, error) {
	if strings.HasPrefix(ref, AliasPrefix) {
		if id, found := Pinned(ctx, ref); found {
			if id == "" {
				return nil, fmt.Errorf("%w: alias %q does not exist", ErrNotFound, ref)
			}
			v, ok := s.keys.Load(id)
			if !ok {
				return nil, fmt.Errorf("%w: key %s (named by %q when the request was authorized) does not exist", ErrNotFound, id, ref)
			}
			return v.(*handle), nil
		}
	}
	return s.lookup(ref)
}
