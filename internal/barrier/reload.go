package barrier

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cofferkms/coffer/internal/storage"
)

// ErrKeyringMismatch means the stored keyring is not one this replica can
// serve with: its root key does not open it, or it lacks a term (or has
// another key for a term) this replica holds. Two replicas with different
// keyrings over one store would each write entries the other cannot read,
// so a replica in this state refuses to serve until it is sealed and
// unsealed with the shares of the store it runs on.
var ErrKeyringMismatch = errors.New("the stored barrier keyring does not match this replica's")

// KeyringPath is the stored path of the keyring, for watchers.
const KeyringPath = pathKeyring

// ReloadKeyring reads the stored keyring again and adopts it when it holds
// every term this replica has, with the same keys, and possibly more: a
// keyring rotated on another replica becomes usable here. It returns an
// error wrapping ErrKeyringMismatch when the stored keyring cannot be
// opened with this replica's root key or drops or changes a term. It does
// nothing while sealed.
func (b *Barrier) ReloadKeyring(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ring == nil {
		return nil
	}
	stored, _, err := b.storedRingLocked(ctx)
	if err != nil {
		return err
	}
	if stored == b.ring {
		return nil
	}
	old := b.ring
	b.ring = stored
	for _, t := range old.Terms {
		clear(t.Key) // stored holds its own copies; the root is shared
	}
	return nil
}

// storedRingLocked reads the stored keyring and its revision. It returns
// b.ring itself when the stored one has the same terms, and a new keyring
// (sharing b.ring's root) when it has more. The caller holds mu and the
// barrier is unsealed.
func (b *Barrier) storedRingLocked(ctx context.Context) (*keyring, int64, error) {
	cur := b.ring
	e, err := b.backend.Get(ctx, pathKeyring)
	if err != nil {
		return nil, 0, fmt.Errorf("reading keyring: %w", err)
	}
	aead, err := newAEAD(cur.root)
	if err != nil {
		return nil, 0, err
	}
	if len(e.Value) < aead.NonceSize() {
		return nil, 0, fmt.Errorf("keyring: %w", ErrCorrupt)
	}
	plain, err := aead.Open(nil, e.Value[:aead.NonceSize()], e.Value[aead.NonceSize():], []byte(pathKeyring))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: this replica's root key does not open it (another server's store, or a keyring written by a replica unsealed with other shares); seal this replica and unseal it with the shares of this store", ErrKeyringMismatch)
	}
	defer clear(plain)
	ring := &keyring{root: cur.root}
	if err := json.Unmarshal(plain, ring); err != nil {
		return nil, 0, fmt.Errorf("keyring: %w", err)
	}
	for _, t := range cur.Terms {
		st := ring.term(t.Term)
		if st == nil || subtle.ConstantTimeCompare(st.Key, t.Key) != 1 {
			ring.root = nil
			ring.wipe()
			return nil, 0, fmt.Errorf("%w: the stored keyring lacks term %d or has another key for it; entries sealed under it would be unreadable", ErrKeyringMismatch, t.Term)
		}
	}
	if len(ring.Terms) == len(cur.Terms) && ring.ActiveTerm == cur.ActiveTerm {
		ring.root = nil
		ring.wipe()
		return cur, e.Revision, nil
	}
	if err := ring.prepare(); err != nil {
		ring.root = nil
		ring.wipe()
		return nil, 0, err
	}
	return ring, e.Revision, nil
}

// errKeyringRotated is returned by RotateKeyring when another replica
// rotated the keyring between its read and its write.
var errKeyringRotated = fmt.Errorf("the keyring was rotated concurrently (by another replica); run rotate-keyring again if another term is still wanted: %w", storage.ErrConflict)

// errUnknownTerm is wrapped (with ErrCorrupt) by an entry sealed under a
// keyring term this replica does not hold.
var errUnknownTerm = errors.New("unknown keyring term")

// Get returns the decrypted entry at path. An entry sealed under a keyring
// term this replica does not hold yet (rotated in by another replica, whose
// watch event has not arrived) makes it read the stored keyring once and
// try again.
func (b *Barrier) Get(ctx context.Context, path string) (storage.Entry, error) {
	return b.withReload(ctx, func() (storage.Entry, error) { return b.get(ctx, path) })
}

// Open decrypts e, a raw entry of path obtained from the store by other
// means (a watch event's value), with exactly the checks of Get: the path
// is the entry's associated data, so an entry moved to another path does
// not open, and an entry sealed under a keyring term this replica does not
// hold yet makes it read the stored keyring once and try again. A value
// that does not open is ErrCorrupt. e.Value is not changed; the result's
// Value is new plaintext.
func (b *Barrier) Open(ctx context.Context, path string, e storage.Entry) (storage.Entry, error) {
	return b.withReload(ctx, func() (storage.Entry, error) { return b.openEntry(path, e) })
}

// withReload runs read, and once more after reloading the keyring when it
// fails for an unknown term.
func (b *Barrier) withReload(ctx context.Context, read func() (storage.Entry, error)) (storage.Entry, error) {
	e, err := read()
	if errors.Is(err, errUnknownTerm) {
		if rerr := b.ReloadKeyring(ctx); rerr != nil {
			return storage.Entry{}, errors.Join(err, rerr)
		}
		e, err = read()
	}
	return e, err
}
