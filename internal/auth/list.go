package auth

import (
	"cmp"
	"slices"
)

// List returns the tokens that have not expired, oldest first (then by
// accessor), for `coffer token list`. The token values are never kept, so
// they cannot be listed.
func (t *Tokens) List() []Principal {
	now := t.now()
	t.mu.RLock()
	out := make([]Principal, 0, len(t.byAccessor))
	for _, r := range t.byAccessor {
		if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
			continue
		}
		out = append(out, r.principal())
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b Principal) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Accessor, b.Accessor)
	})
	return out
}
