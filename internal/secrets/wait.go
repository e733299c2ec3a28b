package secrets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

// Waiting for new versions.
//
// A caller (the Kubernetes sync controller, coffer exec --watch) names the
// secrets it holds and the current version of each, and Wait returns as
// soon as one of them differs. Nothing is polled: every write of a
// secret's metadata record, by this service or (through the follow loop,
// Refresh) by another replica, wakes the waiters of that one name, and a
// woken waiter reads again only the names that changed. A resync after a
// watch lost history, or a seal, wakes every waiter to read everything.
//
// The hub keeps, per name, the waiters that hold it: a write costs one
// map lookup and one non-blocking send per waiter of that name, whatever
// the number of other waiters. A waiter's pending set holds at most its
// own names, so nothing needs a bound beyond MaxWaitNames.

// Limits of Wait.
const (
	// MaxWaitNames bounds the secrets one wait names.
	MaxWaitNames = 1000
	// MaxWait bounds how long one wait lasts; DefaultWait is its default.
	MaxWait     = 5 * time.Minute
	DefaultWait = 30 * time.Second
)

// Change is the state of a secret a wait reports: its current version (0
// when it does not exist, is soft-deleted, has no current version or its
// current version was destroyed) and whether it is soft-deleted.
type Change struct {
	Name           string
	CurrentVersion uint32
	Deleted        bool
}

// WaitOptions tune one Wait.
type WaitOptions struct {
	// Check, when set, is called every CheckEvery while the wait blocks
	// (and on every wake): an error ends the wait with that error (the
	// caller's credential was revoked or expired).
	Check      func() error
	CheckEvery time.Duration
}

// defaultCheckEvery is WaitOptions.CheckEvery when it is not set.
const defaultCheckEvery = time.Second

// waiter is one Wait in progress. Its fields are guarded by the hub's mu.
type waiter struct {
	wake    chan struct{} // buffered 1: a pending wake-up
	changed map[string]struct{}
	all     bool // read every name again
}

// hub routes changes to the waiters of each name.
type hub struct {
	mu     sync.Mutex
	byName map[string]map[*waiter]struct{}
	every  map[*waiter]struct{}
}

func (h *hub) add(w *waiter, names map[string]uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byName == nil {
		h.byName = map[string]map[*waiter]struct{}{}
		h.every = map[*waiter]struct{}{}
	}
	h.every[w] = struct{}{}
	for n := range names {
		ws := h.byName[n]
		if ws == nil {
			ws = map[*waiter]struct{}{}
			h.byName[n] = ws
		}
		ws[w] = struct{}{}
	}
}

func (h *hub) remove(w *waiter, names map[string]uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.every, w)
	for n := range names {
		if ws := h.byName[n]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(h.byName, n)
			}
		}
	}
}

func (w *waiter) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// notify wakes the waiters of name.
func (h *hub) notify(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.byName[name] {
		if !w.all {
			w.changed[name] = struct{}{}
		}
		w.poke()
	}
}

// notifyAll wakes every waiter to read all its names again.
func (h *hub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.every {
		w.all = true
		clear(w.changed)
		w.poke()
	}
}

// take returns what changed for w since the last take: every name (all)
// or the names in changed.
func (h *hub) take(w *waiter) (all bool, names []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	all, w.all = w.all, false
	for n := range w.changed {
		names = append(names, n)
	}
	clear(w.changed)
	return all, names
}

// notifyingStore wakes the waiters of every secret whose metadata record a
// batch writes, once the batch returns. It wakes them also when the batch
// failed (an ambiguous failure may have committed): a woken waiter only
// reads the name again.
type notifyingStore struct {
	Store
	hub *hub
}

func (n notifyingStore) Apply(ctx context.Context, ops ...storage.Op) error {
	err := n.Store.Apply(ctx, ops...)
	if errors.Is(err, storage.ErrConflict) {
		return err // nothing was written
	}
	for _, op := range ops {
		if op.Kind != storage.OpCheck && strings.HasPrefix(op.Key, metaPrefix) {
			n.hub.notify(strings.TrimPrefix(op.Key, metaPrefix))
		}
	}
	return err
}

// Refresh wakes the waiters of a secret another replica changed (the
// follow loop hands it every change under secrets/meta/; the service
// caches nothing else to update).
func (s *Service) Refresh(_ context.Context, c storage.Change) error {
	if name, ok := strings.CutPrefix(c.Path, metaPrefix); ok {
		s.hub.notify(name)
	}
	return nil
}

// Resync wakes every waiter to read all its names again (the follow loop
// lost history: any secret may have changed).
func (s *Service) Resync(context.Context) error {
	s.hub.notifyAll()
	return nil
}

// stateOf reads the state a wait compares.
func (s *Service) stateOf(ctx context.Context, name string) (Change, error) {
	m, _, err := s.load(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return Change{Name: name}, nil
	}
	if err != nil {
		return Change{}, err
	}
	c := Change{Name: name, CurrentVersion: m.Current}
	if m.DeletedAt != nil {
		c.CurrentVersion, c.Deleted = 0, true
	} else if vm := m.find(m.Current); vm == nil || vm.DestroyedAt != nil {
		c.CurrentVersion = 0
	}
	return c, nil
}

// Changed returns at once the secrets of known (as in Wait) whose state
// differs, without waiting.
func (s *Service) Changed(ctx context.Context, known map[string]uint32) ([]Change, error) {
	if err := checkKnown(known); err != nil {
		return nil, err
	}
	out := []Change{}
	for n, v := range known {
		c, err := s.stateOf(ctx, n)
		if err != nil {
			return nil, err
		}
		if c.CurrentVersion != v {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func checkKnown(known map[string]uint32) error {
	if len(known) == 0 || len(known) > MaxWaitNames {
		return fmt.Errorf("%w: a wait names 1 to %d secrets, not %d", ErrInvalidArgument, MaxWaitNames, len(known))
	}
	for n := range known {
		if err := CheckName(n); err != nil {
			return err
		}
	}
	return nil
}

// Wait returns the secrets of known (name -> the current version the
// caller holds, 0 for none) whose state differs, as soon as one does. It
// returns an empty list when ctx ends (the caller's wait bound), the error
// of opts.Check when that fails, and a store error (barrier.ErrSealed once
// the server seals: a seal wakes every waiter).
func (s *Service) Wait(ctx context.Context, known map[string]uint32, opts WaitOptions) ([]Change, error) {
	if err := checkKnown(known); err != nil {
		return nil, err
	}
	// Registered before the first read: a write between the read and the
	// block still wakes this waiter.
	w := &waiter{wake: make(chan struct{}, 1), changed: map[string]struct{}{}}
	s.hub.add(w, known)
	defer s.hub.remove(w, known)

	every := opts.CheckEvery
	if every <= 0 {
		every = defaultCheckEvery
	}
	var tick <-chan time.Time
	if opts.Check != nil {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	read := func(names func(yield func(string) bool)) ([]Change, error) {
		var out []Change
		for n := range names {
			c, err := s.stateOf(ctx, n)
			if err != nil {
				if ctx.Err() != nil {
					return nil, nil
				}
				return nil, err
			}
			if c.CurrentVersion != known[n] {
				out = append(out, c)
			}
		}
		return out, nil
	}
	allNames := func(yield func(string) bool) {
		for n := range known {
			if !yield(n) {
				return
			}
		}
	}
	out, err := read(allNames)
	for err == nil && len(out) == 0 {
		select {
		case <-ctx.Done():
			return []Change{}, nil
		case <-tick:
			if err := opts.Check(); err != nil {
				return nil, err
			}
			continue
		case <-w.wake:
		}
		if opts.Check != nil {
			if err := opts.Check(); err != nil {
				return nil, err
			}
		}
		all, names := s.hub.take(w)
		if all {
			out, err = read(allNames)
		} else {
			out, err = read(func(yield func(string) bool) {
				for _, n := range names {
					if !yield(n) {
						return
					}
				}
			})
		}
	}
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []Change{}
	}
	slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
