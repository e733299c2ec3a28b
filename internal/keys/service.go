// Package keys manages key encryption keys (KEKs): their lifecycle
// (create, enable, disable, rotate, schedule and cancel deletion, aliases),
// automatic rotation, and the cryptographic operations that use them
// (Encrypt, Decrypt, ReEncrypt, GenerateDataKey, GenerateRandom).
//
// A key has numbered versions, each a 256-bit AES-GCM key. Encrypt uses the
// primary (newest) version; Decrypt uses the version the ciphertext names, so
// rotation never breaks old ciphertexts. Only deletion, scheduled with a
// waiting period of 7 to 30 days, destroys key material.
//
// Keys are persisted through a Store (the barrier, which encrypts them) and
// cached in memory as immutable snapshots: the crypto hot path loads a
// snapshot with one atomic read and takes no lock. Writers of one key are
// serialized by that key's mutex and commit with compare-and-swap on the
// stored revision, so a future multi-replica store can detect lost updates.
//
// Sealing and key material. Every write (Create, the record updates, the
// lease of uses, destroy, alias writes) holds the service's life lock for
// reading; Unload takes it for writing, so it waits for writes in flight and
// later writes see the service unloaded and fail with barrier.ErrSealed. A
// writer works on a deep copy of the record, so wiping a snapshot can never
// change what a writer stores, and a record whose live versions have missing
// or all-zero material is refused, never persisted. When a write publishes a
// new snapshot, the material of the one it replaces is wiped at once: the
// lock-free crypto path never reads Material (it uses the cipher.AEAD built
// from it, which holds its own expanded copy of the key), and every other
// reader of Material is a writer of the same key, serialized by its mutex.
//
// Uses of a version. Random 96-bit nonces bound the messages per key, so
// the primary version rotates after 2^31 encryptions. The count survives
// restarts and seals as a lease: the stored record reserves a number of
// uses of the primary version, an encryption beyond the reservation first
// stores a larger one, and a loaded key counts every reserved use as spent.
// A crash can skip uses, never reuse them.
package keys

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/storage"
)

// Store is the storage the service persists keys in; *barrier.Barrier
// satisfies it.
type Store interface {
	Get(ctx context.Context, path string) (storage.Entry, error)
	List(ctx context.Context, prefix string) ([]string, error)
	Apply(ctx context.Context, ops ...storage.Op) error
}

// Limits and defaults.
const (
	MinPendingDays     = 7
	MaxPendingDays     = 30
	DefaultPendingDays = 30
	// MinRotationPeriod is the shortest automatic rotation period.
	MinRotationPeriod = time.Minute
	// MaxDescription bounds a key description in bytes.
	MaxDescription = 8192
	// MaxTags bounds the number of tags of a key.
	MaxTags = 50
	// rotateAfterUses forces a new version well before random 96-bit GCM
	// nonces reach the 2^32 messages NIST SP 800-38D allows per key.
	rotateAfterUses = 1 << 31
	// useLease is how many uses of a version one write of its record
	// reserves: one storage write per 65,536 encryptions, and at most that
	// many uses skipped by a restart.
	useLease = 1 << 16

	keyPrefix   = "keys/"
	aliasPrefix = "aliases/"
	// AliasPrefix starts every alias name.
	AliasPrefix = "alias/"
)

// aliasName is checked with a length bound outside the regexp: a counted
// repetition like {1,250} compiles to 250 copies of the class.
var aliasName = regexp.MustCompile(`^alias/[A-Za-z0-9/_.-]+$`)

const maxAliasLen = len(AliasPrefix) + 250

type versionRecord struct {
	Version   uint32    `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	Material  []byte    `json:"material,omitempty"`
	// UsesReserved is how many encryptions this version may have made:
	// the persisted upper bound of its use counter.
	UsesReserved uint64 `json:"uses_reserved,omitempty"`
}

// record is the persisted form of a key (inside the barrier).
type record struct {
	ID             string            `json:"id"`
	Description    string            `json:"description,omitempty"`
	State          State             `json:"state"`
	CreatedAt      time.Time         `json:"created_at"`
	RotationPeriod time.Duration     `json:"rotation_period,omitempty"`
	LastRotatedAt  time.Time         `json:"last_rotated_at"`
	DeletionDate   *time.Time        `json:"deletion_date,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	Primary        uint32            `json:"primary"`
	Versions       []versionRecord   `json:"versions"`
}

type aliasRecord struct {
	KeyID string `json:"key_id"`
}

// key is an immutable snapshot of a key with its ciphers ready.
type key struct {
	rec      record
	rev      int64
	raw      [16]byte
	aeads    []cipher.AEAD // index version-1; nil for destroyed versions
	reserved uint64        // UsesReserved of the primary version
}

// handle holds the current snapshot of one key.
type handle struct {
	mu  sync.Mutex // serializes writers of this key
	cur atomic.Pointer[key]
	// uses counts encryptions under the primary version; it starts at the
	// stored reservation when the key is loaded.
	uses atomic.Uint64
	// gone is set, under the service's life lock, when Unload drops the
	// handle: a writer that resolved it before must not write.
	gone bool
}

// Service is the key service. Create it with New and call Load after the
// barrier is unsealed.
type Service struct {
	store Store
	now   func() time.Time

	// rotateAfter and lease are rotateAfterUses and useLease, smaller in
	// tests.
	rotateAfter, lease uint64

	// life is held for reading by every write and for writing by Load and
	// Unload; unloaded is set by Unload and cleared by Load.
	life     sync.RWMutex
	unloaded bool

	keys    sync.Map // id -> *handle
	aliases sync.Map // alias name -> key id

	aliasMu sync.Mutex // serializes alias writes

	// byKey indexes aliases by key id for Names, which authorization calls
	// on every request. Slices are replaced, never appended to in place.
	byKeyMu sync.RWMutex
	byKey   map[string][]string
}

// setAlias records name -> id in both indexes.
func (s *Service) setAlias(name, id string) {
	s.aliases.Store(name, id)
	s.byKeyMu.Lock()
	if s.byKey == nil {
		s.byKey = map[string][]string{}
	}
	old := s.byKey[id]
	n := make([]string, 0, len(old)+1)
	n = append(append(n, old...), name)
	slices.Sort(n)
	s.byKey[id] = n
	s.byKeyMu.Unlock()
}

// dropAlias removes name from both indexes.
func (s *Service) dropAlias(name string) {
	v, ok := s.aliases.LoadAndDelete(name)
	if !ok {
		return
	}
	id := v.(string)
	s.byKeyMu.Lock()
	n := slices.DeleteFunc(slices.Clone(s.byKey[id]), func(a string) bool { return a == name })
	if len(n) == 0 {
		delete(s.byKey, id)
	} else {
		s.byKey[id] = n
	}
	s.byKeyMu.Unlock()
}

// Names resolves a key id or alias to the key's id and all its aliases
// (alias/NAME, sorted; the caller must not modify the slice), for policies
// that name a key either way. It works for keys in every state.
func (s *Service) Names(ref string) (id string, aliases []string, err error) {
	h, err := s.lookup(ref)
	if err != nil {
		return "", nil, err
	}
	id = h.cur.Load().rec.ID
	s.byKeyMu.RLock()
	aliases = s.byKey[id]
	s.byKeyMu.RUnlock()
	return id, aliases, nil
}

// Option configures a Service.
type Option func(*Service)

// WithClock replaces time.Now, for tests of rotation and deletion.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithUseLimits replaces the number of encryptions after which a version
// rotates (2^31) and the number of uses one storage write reserves (65,536),
// for tests of the use counter. Both must be at least 1.
func WithUseLimits(rotateAfter, lease uint64) Option {
	return func(s *Service) { s.rotateAfter, s.lease = max(rotateAfter, 1), max(lease, 1) }
}

// New returns a service over store.
func New(store Store, opts ...Option) *Service {
	s := &Service{store: store, now: time.Now, rotateAfter: rotateAfterUses, lease: useLease}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Load reads every key and alias into memory. Call it after unsealing.
func (s *Service) Load(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	s.unloadLocked()
	if err := s.loadLocked(ctx); err != nil {
		s.unloadLocked()
		return err
	}
	s.unloaded = false
	return nil
}

func (s *Service) loadLocked(ctx context.Context) error {
	paths, err := s.store.List(ctx, keyPrefix)
	if err != nil {
		return err
	}
	for _, p := range paths {
		e, err := s.store.Get(ctx, p)
		if err != nil {
			return fmt.Errorf("loading %s: %w", p, err)
		}
		k, err := decodeKey(e)
		if err != nil {
			return fmt.Errorf("loading %s: %w", p, err)
		}
		h := &handle{}
		h.cur.Store(k)
		// Every use reserved before counts as spent: a crash or a seal can
		// skip uses, never reuse them.
		h.uses.Store(k.reserved)
		s.keys.Store(k.rec.ID, h)
	}
	paths, err = s.store.List(ctx, aliasPrefix)
	if err != nil {
		return err
	}
	for _, p := range paths {
		e, err := s.store.Get(ctx, p)
		if err != nil {
			return fmt.Errorf("loading %s: %w", p, err)
		}
		var a aliasRecord
		if err := json.Unmarshal(e.Value, &a); err != nil {
			return fmt.Errorf("loading %s: %w", p, err)
		}
		s.setAlias(AliasPrefix+strings.TrimPrefix(p, aliasPrefix), a.KeyID)
	}
	return nil
}

// Unload drops every cached key and wipes the key material it owns. Call it
// when sealing, after the barrier is sealed: it waits for writes in flight,
// and writes that start later fail with barrier.ErrSealed until Load.
func (s *Service) Unload() {
	s.life.Lock()
	defer s.life.Unlock()
	s.unloadLocked()
	s.unloaded = true
}

func (s *Service) unloadLocked() {
	s.keys.Range(func(id, v any) bool {
		h := v.(*handle)
		h.gone = true
		if k := h.cur.Load(); k != nil {
			k.wipe()
		}
		s.keys.Delete(id)
		return true
	})
	s.aliases.Clear()
	s.byKeyMu.Lock()
	s.byKey = nil
	s.byKeyMu.Unlock()
}

func (k *key) wipe() {
	wipeVersions(k.rec.Versions)
}

func wipeVersions(vs []versionRecord) {
	for i := range vs {
		clear(vs[i].Material)
	}
}

// beginWrite takes the life lock for a write; it fails when the service is
// unloaded (sealed). The caller must call s.life.RUnlock.
func (s *Service) beginWrite() error {
	s.life.RLock()
	if s.unloaded {
		s.life.RUnlock()
		return fmt.Errorf("key service: %w", barrier.ErrSealed)
	}
	return nil
}

// errBadMaterial is the internal error of a record that would lose keys.
var errBadMaterial = errors.New("internal error: refusing to store key material that is missing or all zero")

// checkMaterial refuses a record of a key that is not deleted whose
// versions lack 32 bytes of material or hold only zeros. Storing it would
// destroy every ciphertext of that version (and encrypt new ones under a
// known key); it can only come from a bug, so it is an internal error. A
// version that was already stored without usable material (by the defect
// this guards against, before it was fixed) is lost either way: when prev,
// the snapshot decoded from storage, has no cipher for it, it is let
// through, so the key can still be rotated and changed. (prev's cipher list
// is fixed when it is decoded; wiping its material later does not change
// it.)
func checkMaterial(r *record, prev *key) error {
	if r.State == StateDeleted {
		return nil
	}
	for _, v := range r.Versions {
		if !goodMaterial(v.Material) && (prev == nil || !prev.lost(v.Version)) {
			return fmt.Errorf("key %s version %d: %w", r.ID, v.Version, errBadMaterial)
		}
	}
	return nil
}

// goodMaterial reports whether m is 32 bytes, not all zero.
func goodMaterial(m []byte) bool {
	var or byte
	for _, b := range m {
		or |= b
	}
	return len(m) == 32 && or != 0
}

// lost reports whether version n of k was stored without usable material.
func (k *key) lost(n uint32) bool {
	return n >= 1 && int(n) <= len(k.aeads) && k.aeads[n-1] == nil
}

// cloneVersions deep-copies versions, material included.
func cloneVersions(vs []versionRecord) []versionRecord {
	out := slices.Clone(vs)
	for i := range out {
		if out[i].Material != nil {
			out[i].Material = slices.Clone(out[i].Material)
		}
	}
	return out
}

func decodeKey(e storage.Entry) (*key, error) {
	var rec record
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return nil, err
	}
	clear(e.Value)
	return newKey(rec, e.Revision)
}

func newKey(rec record, rev int64) (*key, error) {
	id, err := uuid.Parse(rec.ID)
	if err != nil {
		return nil, fmt.Errorf("bad key id %q: %w", rec.ID, err)
	}
	k := &key{rec: rec, rev: rev, raw: id}
	for _, v := range rec.Versions {
		if v.Version == 0 {
			return nil, fmt.Errorf("key %s has a version 0", rec.ID)
		}
		for uint32(len(k.aeads)) < v.Version {
			k.aeads = append(k.aeads, nil)
		}
		if v.Version == rec.Primary {
			k.reserved = v.UsesReserved
		}
		if !goodMaterial(v.Material) {
			// Destroyed, or lost to the seal race this package now
			// prevents: never encrypt or decrypt with an all-zero key.
			continue
		}
		a, err := newGCM(v.Material)
		if err != nil {
			return nil, err
		}
		k.aeads[v.Version-1] = a
	}
	return k, nil
}

// view renders the public metadata of k.
func (s *Service) view(k *key) Key {
	r := k.rec
	out := Key{
		ID:             r.ID,
		Aliases:        s.aliasesOf(r.ID),
		Description:    r.Description,
		State:          r.State,
		CreatedAt:      r.CreatedAt,
		PrimaryVersion: r.Primary,
		RotationPeriod: r.RotationPeriod,
		LastRotatedAt:  r.LastRotatedAt,
		DeletionDate:   r.DeletionDate,
		Tags:           r.Tags,
		Versions:       make([]Version, 0, len(r.Versions)),
	}
	for _, v := range r.Versions {
		out.Versions = append(out.Versions, Version{Version: v.Version, CreatedAt: v.CreatedAt})
	}
	if r.RotationPeriod > 0 && r.State == StateEnabled {
		next := r.LastRotatedAt.Add(r.RotationPeriod)
		out.NextRotationAt = &next
	}
	return out
}

func (s *Service) aliasesOf(id string) []string {
	out := []string{}
	s.aliases.Range(func(name, kid any) bool {
		if kid.(string) == id {
			out = append(out, name.(string))
		}
		return true
	})
	slices.Sort(out)
	return out
}

// lookup finds the handle of a key id or alias as the alias index has it
// now (resolve also heeds the request's pins).
func (s *Service) lookup(ref string) (*handle, error) {
	id := ref
	if strings.HasPrefix(ref, AliasPrefix) {
		v, ok := s.aliases.Load(ref)
		if !ok {
			return nil, fmt.Errorf("%w: alias %q does not exist", ErrNotFound, ref)
		}
		id = v.(string)
	} else if ref == "" {
		return nil, fmt.Errorf("%w: key_id is required (a key id or alias/NAME)", ErrInvalidArgument)
	}
	v, ok := s.keys.Load(id)
	if !ok {
		if _, err := uuid.Parse(id); err != nil {
			return nil, fmt.Errorf("%w: %q is neither a key id nor an alias (aliases start with %q)", ErrNotFound, ref, AliasPrefix)
		}
		return nil, fmt.Errorf("%w: key %q does not exist", ErrNotFound, ref)
	}
	return v.(*handle), nil
}

// CheckAlias refuses a name Create and CreateAlias would refuse as an
// alias, with the same error, so a caller can check before it commits to
// a creation (the Vault door records a creation's intent first).
func CheckAlias(name string) error { return checkAlias(name) }

func checkAlias(name string) error {
	// Names are stored and listed in clear: a token or secret pasted into
	// one (a Vault path, a wrong argument) would be exposed. Checked first,
	// and the error does not repeat the name, as the others do.
	for _, seg := range strings.Split(name, "/") {
		if kind, ok := credential.Kind(seg); ok && kind != credential.KindAccessKeyID {
			what := "token"
			if kind == credential.KindAccessKeySecret {
				what = "access key secret"
			}
			return fmt.Errorf("%w: the alias holds a Coffer %s; a key's name is listed in clear, pick another", ErrInvalidArgument, what)
		}
	}
	if len(name) > maxAliasLen || !aliasName.MatchString(name) {
		return fmt.Errorf("%w: alias %q must look like alias/NAME (letters, digits, / _ . -, at most 256 characters)", ErrInvalidArgument, name)
	}
	if strings.HasPrefix(name, "alias/coffer/") {
		return fmt.Errorf("%w: aliases under alias/coffer/ are reserved", ErrInvalidArgument)
	}
	// AWS reserves alias/aws/ for the keys it manages, and tools read such
	// names as AWS's own. Only new names are checked here: an alias
	// stored before this check is still loaded, and can be deleted.
	if strings.HasPrefix(name, "alias/aws/") {
		return fmt.Errorf("%w: aliases under alias/aws/ are reserved (AWS names its own keys so)", ErrInvalidArgument)
	}
	// A name the API could not put in a path: the server refuses paths
	// with dot segments or doubled slashes (also escaped as %2F), so such
	// an alias could be neither deleted nor named in a key route.
	for _, seg := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(name, AliasPrefix), "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: alias %q has an empty, . or .. segment; name it without //, /./ or /../", ErrInvalidArgument, name)
		}
	}
	return nil
}

func aliasPath(name string) string { return aliasPrefix + strings.TrimPrefix(name, AliasPrefix) }

func checkTags(tags map[string]string) error {
	if len(tags) > MaxTags {
		return fmt.Errorf("%w: %d tags; at most %d are allowed", ErrInvalidArgument, len(tags), MaxTags)
	}
	for k, v := range tags {
		if k == "" || len(k) > 128 || len(v) > 256 {
			return fmt.Errorf("%w: tag %q: keys must be 1..128 bytes and values at most 256", ErrInvalidArgument, k)
		}
	}
	return nil
}

func parseRotation(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := ParsePeriod(s)
	if err != nil {
		return 0, err
	}
	if d < MinRotationPeriod {
		return 0, fmt.Errorf("%w: rotation period %s is shorter than the minimum %s", ErrInvalidArgument, s, MinRotationPeriod)
	}
	return d, nil
}

// Create makes a new enabled key with one version.
func (s *Service) Create(ctx context.Context, req CreateRequest) (Key, error) {
	if len(req.Description) > MaxDescription {
		return Key{}, fmt.Errorf("%w: description is %d bytes; at most %d are allowed", ErrInvalidArgument, len(req.Description), MaxDescription)
	}
	period, err := parseRotation(req.RotationPeriod)
	if err != nil {
		return Key{}, err
	}
	if err := checkTags(req.Tags); err != nil {
		return Key{}, err
	}
	if req.Alias != "" {
		if err := checkAlias(req.Alias); err != nil {
			return Key{}, err
		}
	}
	if err := s.beginWrite(); err != nil {
		return Key{}, err
	}
	defer s.life.RUnlock()
	now := s.now().UTC()
	rec := record{
		ID:             uuid.NewString(),
		Description:    req.Description,
		State:          StateEnabled,
		CreatedAt:      now,
		RotationPeriod: period,
		LastRotatedAt:  now,
		Tags:           req.Tags,
		Primary:        1,
		Versions:       []versionRecord{{Version: 1, CreatedAt: now, Material: newMaterial()}},
	}
	defer func() { wipeVersions(rec.Versions) }()
	if err := checkMaterial(&rec, nil); err != nil {
		return Key{}, err
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return Key{}, err
	}
	defer clear(val)
	ops := []storage.Op{{Kind: storage.OpPut, Key: keyPrefix + rec.ID, Value: val, IfRevision: 0}}
	if req.Alias != "" {
		s.aliasMu.Lock()
		defer s.aliasMu.Unlock()
		if _, ok := s.aliases.Load(req.Alias); ok {
			return Key{}, fmt.Errorf("%w: %q already points to a key; pick another name or delete it first", ErrAliasExists, req.Alias)
		}
		av, _ := json.Marshal(aliasRecord{KeyID: rec.ID})
		ops = append(ops, storage.Op{Kind: storage.OpPut, Key: aliasPath(req.Alias), Value: av, IfRevision: 0})
	}
	if err := s.store.Apply(ctx, ops...); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return Key{}, fmt.Errorf("%w: %q already points to a key", ErrAliasExists, req.Alias)
		}
		return Key{}, err
	}
	k, err := s.reload(ctx, rec.ID)
	if err != nil {
		return Key{}, err
	}
	h := &handle{}
	h.cur.Store(k)
	s.keys.Store(rec.ID, h)
	if req.Alias != "" {
		s.setAlias(req.Alias, rec.ID)
	}
	return s.view(k), nil
}

// reload reads a key back from the store (for its new revision). It is
// called after a write was stored, so it reads even when the caller's
// context is done: a client that hangs up between the write and the read
// must not leave the old revision cached, or every later write of the key
// fails compare-and-swap until the next seal.
func (s *Service) reload(ctx context.Context, id string) (*key, error) {
	e, err := s.store.Get(context.WithoutCancel(ctx), keyPrefix+id)
	if err != nil {
		return nil, err
	}
	return decodeKey(e)
}

func newMaterial() []byte {
	m := make([]byte, 32)
	rand.Read(m)
	return m
}

// update applies change to a copy of the key's record and commits it with
// compare-and-swap. change returns an error to abort without writing.
func (s *Service) update(ctx context.Context, ref string, change func(r *record, now time.Time) error) (Key, error) {
	h, err := s.resolve(ctx, ref)
	if err != nil {
		return Key{}, err
	}
	k, err := s.updateHandle(ctx, h, change)
	if err != nil {
		return Key{}, err
	}
	return s.view(k), nil
}

func (s *Service) updateHandle(ctx context.Context, h *handle, change func(r *record, now time.Time) error) (*key, error) {
	if err := s.beginWrite(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gone {
		// Resolved before a seal; the key was reloaded since (or not).
		return nil, fmt.Errorf("key service: the server was sealed during this request; retry: %w", barrier.ErrSealed)
	}
	for attempt := 0; ; attempt++ {
		k, err := s.writeLocked(ctx, h, change)
		if attempt == maxWriteAttempts-1 || !errors.Is(err, storage.ErrConflict) {
			return k, err
		}
		// The stored record moved on without this process: a rewrap
		// rewrote it, or a write was stored but not read back. Take the
		// stored record and apply change to it again (maxWriteAttempts in all), as a
		// rewrap may move it on once more.
		if s.refreshLocked(ctx, h) != nil {
			return nil, err
		}
	}
}

// maxWriteAttempts bounds how often a write whose stored record moved on
// (a rewrap, a write stored but not read back) is applied again to the
// stored record. One rewrap pass moves a record once; more attempts only
// matter while rewraps run back to back.
const maxWriteAttempts = 16

// refreshLocked replaces h's snapshot with the stored record when its
// revision differs. The caller holds h.mu and the life lock.
func (s *Service) refreshLocked(ctx context.Context, h *handle) error {
	old := h.cur.Load()
	k, err := s.reload(ctx, old.rec.ID)
	if err != nil {
		return err
	}
	if k.rev == old.rev {
		k.wipe()
		return errors.New("the stored key is unchanged")
	}
	h.cur.Store(k)
	if k.rec.Primary != old.rec.Primary {
		h.uses.Store(k.reserved)
	} else {
		for u := h.uses.Load(); u < k.reserved && !h.uses.CompareAndSwap(u, k.reserved); u = h.uses.Load() {
		}
	}
	old.wipe()
	return nil
}

// writeLocked applies change to a copy of h's record and stores it with
// compare-and-swap. The caller holds h.mu and the life lock.
func (s *Service) writeLocked(ctx context.Context, h *handle, change func(r *record, now time.Time) error) (*key, error) {
	old := h.cur.Load()
	rec := old.rec
	rec.Versions = cloneVersions(old.rec.Versions)
	defer func() { wipeVersions(rec.Versions) }() // change may replace the slice
	rec.Tags = cloneMap(old.rec.Tags)
	if err := change(&rec, s.now().UTC()); err != nil {
		return nil, err
	}
	if err := checkMaterial(&rec, old); err != nil {
		return nil, err
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	defer clear(val)
	if err := s.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: keyPrefix + rec.ID, Value: val, IfRevision: old.rev}); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return nil, fmt.Errorf("key %s was changed concurrently; retry: %w", rec.ID, err)
		}
		return nil, err
	}
	k, err := s.reload(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	h.cur.Store(k)
	if k.rec.Primary != old.rec.Primary {
		// A new primary version starts its count here, still under h.mu,
		// so a lease write waiting for h.mu sees the reset count. An
		// encryption that loaded old just before counts against the new
		// version: the count errs high, never low, by at most the number
		// of encryptions in flight.
		h.uses.Store(0)
	}
	// No writer can hold old (they hold h.mu) and readers never touch its
	// material, only its ciphers: wipe it now.
	old.wipe()
	// The answer is the record this write stored, not the one read back:
	// another replica may have stored a later one in between (the cache
	// takes that). Its versions carry no material.
	ans := &key{rec: rec}
	ans.rec.Versions = make([]versionRecord, len(rec.Versions))
	for i, v := range rec.Versions {
		v.Material = nil
		ans.rec.Versions[i] = v
	}
	return ans, nil
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func notDeleted(r *record) error {
	if r.State == StateDeleted {
		return fmt.Errorf("%w: key %s was deleted on %s and its material destroyed", ErrDeleted, r.ID, r.DeletionDate.Format(time.RFC3339))
	}
	return nil
}

// Describe returns a key's metadata.
func (s *Service) Describe(ctx context.Context, ref string) (Key, error) {
	h, err := s.resolve(ctx, ref)
	if err != nil {
		return Key{}, err
	}
	return s.view(h.cur.Load()), nil
}

// List returns every key that is not deleted, oldest first.
func (s *Service) List(_ context.Context) []Key {
	var ks []*key
	s.keys.Range(func(_, v any) bool {
		if k := v.(*handle).cur.Load(); k.rec.State != StateDeleted {
			ks = append(ks, k)
		}
		return true
	})
	slices.SortFunc(ks, func(a, b *key) int {
		if c := a.rec.CreatedAt.Compare(b.rec.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.rec.ID, b.rec.ID)
	})
	out := make([]Key, len(ks))
	for i, k := range ks {
		out[i] = s.view(k)
	}
	return out
}

// Update changes a key's description, rotation period or tags.
func (s *Service) Update(ctx context.Context, ref string, req UpdateRequest) (Key, error) {
	var period time.Duration
	if req.RotationPeriod != nil {
		p, err := parseRotation(*req.RotationPeriod)
		if err != nil {
			return Key{}, err
		}
		period = p
	}
	if req.Description != nil && len(*req.Description) > MaxDescription {
		return Key{}, fmt.Errorf("%w: description is %d bytes; at most %d are allowed", ErrInvalidArgument, len(*req.Description), MaxDescription)
	}
	if req.Tags != nil {
		if err := checkTags(*req.Tags); err != nil {
			return Key{}, err
		}
	}
	return s.update(ctx, ref, func(r *record, now time.Time) error {
		if err := notDeleted(r); err != nil {
			return err
		}
		if req.Description != nil {
			r.Description = *req.Description
		}
		if req.RotationPeriod != nil {
			if r.RotationPeriod == 0 && period > 0 {
				// Enabling rotation counts the period from now, not from creation.
				r.LastRotatedAt = now
			}
			r.RotationPeriod = period
		}
		if req.Tags != nil {
			r.Tags = cloneMap(*req.Tags)
		}
		return nil
	})
}

// Enable makes a disabled key usable again.
func (s *Service) Enable(ctx context.Context, ref string) (Key, error) {
	return s.setEnabled(ctx, ref, StateEnabled)
}

// Disable makes a key unusable for every cryptographic operation until it is
// enabled again.
func (s *Service) Disable(ctx context.Context, ref string) (Key, error) {
	return s.setEnabled(ctx, ref, StateDisabled)
}

// setEnabled moves a key between Enabled and Disabled (want is one of them).
func (s *Service) setEnabled(ctx context.Context, ref string, want State) (Key, error) {
	return s.update(ctx, ref, func(r *record, _ time.Time) error {
		switch r.State {
		case StateEnabled, StateDisabled:
			r.State = want
			return nil
		case StatePendingDeletion:
			return fmt.Errorf("%w: key %s is pending deletion; cancel the deletion first", ErrInvalidState, r.ID)
		}
		return notDeleted(r)
	})
}

// Rotate adds a new primary version now. Older versions stay decrypt-only.
func (s *Service) Rotate(ctx context.Context, ref string) (Key, error) {
	h, err := s.resolve(ctx, ref)
	if err != nil {
		return Key{}, err
	}
	k, err := s.rotateHandle(ctx, h, false, 0)
	if err != nil {
		return Key{}, err
	}
	return s.view(k), nil
}

// rotateHandle adds a primary version. With onlyIfDue it rotates only
// when the rotation period has passed, and with ifPrimary (not 0) only
// while ifPrimary is still the primary version: both are decided again on
// the stored record when compare-and-swap finds that it moved on (another
// replica rotated first), so one due rotation makes one version.
func (s *Service) rotateHandle(ctx context.Context, h *handle, onlyIfDue bool, ifPrimary uint32) (*key, error) {
	k, err := s.updateHandle(ctx, h, func(r *record, now time.Time) error {
		if r.State != StateEnabled {
			if err := notDeleted(r); err != nil {
				return err
			}
			return fmt.Errorf("%w: key %s is %s; only enabled keys rotate", ErrInvalidState, r.ID, r.State)
		}
		if onlyIfDue && (r.RotationPeriod == 0 || now.Before(r.LastRotatedAt.Add(r.RotationPeriod))) {
			return errNotDue
		}
		if ifPrimary != 0 && r.Primary != ifPrimary {
			return errNotDue
		}
		next := r.Primary + 1
		r.Versions = append(r.Versions, versionRecord{Version: next, CreatedAt: now, Material: newMaterial()})
		r.Primary = next
		r.LastRotatedAt = now
		return nil
	})
	return k, err
}

var errNotDue = errors.New("rotation not due")

// errLeaseHeld aborts a lease write that another encryption already made.
var errLeaseHeld = errors.New("uses already reserved")

// primaryFor returns the snapshot whose primary version the next encryption
// of h may use, counting that use. A use beyond the stored reservation first
// stores a larger one; a use beyond s.rotateAfter first rotates the key.
// Nothing is encrypted under a use that is not persisted.
func (s *Service) primaryFor(ctx context.Context, h *handle) (*key, error) {
	k := h.cur.Load()
	if err := usable(k); err != nil {
		return nil, err
	}
	if k.lost(k.rec.Primary) {
		return nil, fmt.Errorf("internal error: the material of key %s version %d is lost (stored without usable material by an earlier defect); rotate the key to encrypt with it again",
			k.rec.ID, k.rec.Primary)
	}
	n := h.uses.Add(1)
	for tries := 0; n > k.reserved || n > s.rotateAfter; tries++ {
		if tries == 100 {
			return nil, fmt.Errorf("key %s is changing too fast to reserve uses; retry: %w", k.rec.ID, storage.ErrConflict)
		}
		if err := s.reserveUses(ctx, h, k); err != nil {
			return nil, err
		}
		prev := k
		k = h.cur.Load()
		if err := usable(k); err != nil {
			return nil, err
		}
		if k.lost(k.rec.Primary) {
			return nil, fmt.Errorf("internal error: key %s version %d has no usable material", k.rec.ID, k.rec.Primary)
		}
		if k.rec.Primary != prev.rec.Primary {
			n = h.uses.Add(1) // the first uses of the new version
		}
	}
	return k, nil
}

// reserveUses stores a larger reservation of uses for the primary version
// of h, or rotates the key when its primary version is used up.
func (s *Service) reserveUses(ctx context.Context, h *handle, seen *key) error {
	_, err := s.updateHandle(ctx, h, func(r *record, now time.Time) error {
		cur := h.cur.Load()
		if cur != seen {
			return errLeaseHeld // changed since: look again
		}
		if r.State != StateEnabled {
			return usable(cur)
		}
		used := h.uses.Load()
		if used > s.rotateAfter {
			next := r.Primary + 1
			r.Versions = append(r.Versions, versionRecord{Version: next, CreatedAt: now, Material: newMaterial()})
			r.Primary = next
			r.LastRotatedAt = now
			return nil
		}
		for i := range r.Versions {
			if r.Versions[i].Version == r.Primary {
				r.Versions[i].UsesReserved = min(used+s.lease, s.rotateAfter)
				return nil
			}
		}
		return fmt.Errorf("internal error: key %s has no primary version %d", r.ID, r.Primary)
	})
	if errors.Is(err, errLeaseHeld) {
		return nil
	}
	return err
}

// ScheduleDeletion makes the key unusable now and destroys its material
// after pendingDays (7..30; 0 means 30).
func (s *Service) ScheduleDeletion(ctx context.Context, ref string, pendingDays int) (Key, error) {
	if pendingDays == 0 {
		pendingDays = DefaultPendingDays
	}
	if pendingDays < MinPendingDays || pendingDays > MaxPendingDays {
		return Key{}, fmt.Errorf("%w: pending_days must be between %d and %d, not %d", ErrInvalidArgument, MinPendingDays, MaxPendingDays, pendingDays)
	}
	return s.update(ctx, ref, func(r *record, now time.Time) error {
		if err := notDeleted(r); err != nil {
			return err
		}
		if r.State == StatePendingDeletion {
			return fmt.Errorf("%w: key %s is already pending deletion on %s", ErrInvalidState, r.ID, r.DeletionDate.Format(time.RFC3339))
		}
		when := now.Add(time.Duration(pendingDays) * 24 * time.Hour)
		r.State = StatePendingDeletion
		r.DeletionDate = &when
		return nil
	})
}

// CancelDeletion stops a scheduled deletion. The key comes back disabled,
// as in cloud KMSs, so that re-enabling it is a deliberate second step.
func (s *Service) CancelDeletion(ctx context.Context, ref string) (Key, error) {
	return s.update(ctx, ref, func(r *record, _ time.Time) error {
		if err := notDeleted(r); err != nil {
			return err
		}
		if r.State != StatePendingDeletion {
			return fmt.Errorf("%w: key %s is %s, not pending deletion", ErrInvalidState, r.ID, r.State)
		}
		r.State = StateDisabled
		r.DeletionDate = nil
		return nil
	})
}

// CreateAlias points a new alias at a key.
func (s *Service) CreateAlias(ctx context.Context, name, ref string) (Alias, error) {
	if err := checkAlias(name); err != nil {
		return Alias{}, err
	}
	h, err := s.resolve(ctx, ref)
	if err != nil {
		return Alias{}, err
	}
	if err := s.beginWrite(); err != nil {
		return Alias{}, err
	}
	defer s.life.RUnlock()
	s.aliasMu.Lock()
	defer s.aliasMu.Unlock()
	// A taken name is the conflict whatever the target key's state.
	if _, ok := s.aliases.Load(name); ok {
		return Alias{}, fmt.Errorf("%w: %q already points to a key; delete it first", ErrAliasExists, name)
	}
	// As UpdateAlias: the key's state is read under the alias lock, which
	// destroy holds, so a key destroyed meanwhile cannot be given the
	// alias; and a key pending deletion is refused as AWS does (the alias
	// would stop working, then name a destroyed key).
	k := h.cur.Load()
	if err := notDeleted(&k.rec); err != nil {
		return Alias{}, err
	}
	if k.rec.State == StatePendingDeletion {
		return Alias{}, fmt.Errorf("%w: key %s is pending deletion; cancel the deletion before giving it an alias", ErrPendingDeletion, k.rec.ID)
	}
	val, _ := json.Marshal(aliasRecord{KeyID: k.rec.ID})
	if err := s.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: aliasPath(name), Value: val, IfRevision: 0}); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return Alias{}, fmt.Errorf("%w: %q already points to a key", ErrAliasExists, name)
		}
		return Alias{}, err
	}
	s.setAlias(name, k.rec.ID)
	return Alias{Name: name, KeyID: k.rec.ID}, nil
}

// DeleteAlias removes an alias; the key is untouched.
func (s *Service) DeleteAlias(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, AliasPrefix) {
		return fmt.Errorf("%w: alias %q must start with %q", ErrInvalidArgument, name, AliasPrefix)
	}
	if err := s.beginWrite(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	s.aliasMu.Lock()
	defer s.aliasMu.Unlock()
	cached, ok := s.aliases.Load(name)
	if !ok {
		return fmt.Errorf("%w: %q does not exist", ErrAliasNotFound, name)
	}
	// Decide on the stored alias, not the cache: another replica may have
	// deleted it, or deleted and re-created it for another key, since this
	// replica last heard (the caller was authorized on the cached key).
	e, err := s.store.Get(ctx, aliasPath(name))
	if errors.Is(err, storage.ErrNotFound) {
		s.dropAlias(name)
		return fmt.Errorf("%w: %q does not exist", ErrAliasNotFound, name)
	}
	if err != nil {
		return err
	}
	var stored aliasRecord
	uerr := json.Unmarshal(e.Value, &stored)
	clear(e.Value)
	if uerr != nil {
		return fmt.Errorf("alias %s: %w", name, uerr)
	}
	if stored.KeyID != cached.(string) {
		return fmt.Errorf("alias %s was moved to another key concurrently; retry: %w", name, storage.ErrConflict)
	}
	if err := s.store.Apply(ctx, storage.Op{Kind: storage.OpDelete, Key: aliasPath(name), IfRevision: e.Revision}); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return fmt.Errorf("alias %s was changed concurrently; retry: %w", name, err)
		}
		return err
	}
	s.dropAlias(name)
	return nil
}

// ListAliases returns the aliases, optionally only those of one key.
func (s *Service) ListAliases(ctx context.Context, keyRef string) ([]Alias, error) {
	want := ""
	if keyRef != "" {
		h, err := s.resolve(ctx, keyRef)
		if err != nil {
			return nil, err
		}
		want = h.cur.Load().rec.ID
	}
	out := []Alias{}
	s.aliases.Range(func(name, id any) bool {
		if want == "" || id.(string) == want {
			out = append(out, Alias{Name: name.(string), KeyID: id.(string)})
		}
		return true
	})
	slices.SortFunc(out, func(a, b Alias) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Tick runs the background duties once: rotate keys whose period has
// passed, and destroy keys whose deletion date has passed. It returns the
// number of keys rotated and destroyed.
func (s *Service) Tick(ctx context.Context) (rotated, destroyed int, err error) {
	now := s.now()
	var hs []*handle
	s.keys.Range(func(_, v any) bool {
		hs = append(hs, v.(*handle))
		return true
	})
	var errs []error
	for _, h := range hs {
		r := h.cur.Load().rec
		switch {
		case r.State == StatePendingDeletion && r.DeletionDate != nil && !now.Before(*r.DeletionDate):
			if err := s.destroy(ctx, h); errors.Is(err, errNotDue) {
				// Destroyed, or cancelled, elsewhere since it was cached.
			} else if err != nil {
				errs = append(errs, err)
			} else {
				destroyed++
			}
		case r.State == StateEnabled && r.RotationPeriod > 0 && !now.Before(r.LastRotatedAt.Add(r.RotationPeriod)),
			r.State == StateEnabled && h.uses.Load() >= s.rotateAfter:
			// Due by its period, or by the uses of primary version
			// r.Primary: either is decided again on the stored record if
			// another replica wrote it first.
			usedUp := h.uses.Load() >= s.rotateAfter
			ifPrimary := uint32(0)
			if usedUp {
				ifPrimary = r.Primary
			}
			_, err := s.rotateHandle(ctx, h, !usedUp, ifPrimary)
			if err != nil && !errors.Is(err, errNotDue) {
				errs = append(errs, err)
			} else if err == nil {
				rotated++
			}
		}
	}
	return rotated, destroyed, errors.Join(errs...)
}

// destroy wipes the material of a key whose deletion date has passed and
// removes its aliases. A tombstone stays so that Decrypt can say the key was
// deleted rather than that it never existed. It returns errNotDue when the
// stored record is no longer due: another replica destroyed the key first,
// or the deletion was cancelled.
func (s *Service) destroy(ctx context.Context, h *handle) error {
	if err := s.beginWrite(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gone {
		return fmt.Errorf("key service: %w", barrier.ErrSealed)
	}
	s.aliasMu.Lock()
	defer s.aliasMu.Unlock()
	for attempt := 0; ; attempt++ {
		err := s.destroyLocked(ctx, h)
		if attempt == maxWriteAttempts-1 || !errors.Is(err, storage.ErrConflict) {
			return err
		}
		// The stored record (or an alias) moved on: another replica, or a
		// rewrap, wrote it since this one cached it. Decide again on what
		// is stored now.
		if s.refreshLocked(ctx, h) != nil {
			return err
		}
	}
}

// destroyLocked is one attempt of destroy. The caller holds h.mu, the
// alias lock and the life lock. The record is written with
// compare-and-swap on its cached revision, and each alias is deleted only
// if it still points at this key, unchanged since it was read.
func (s *Service) destroyLocked(ctx context.Context, h *handle) error {
	old := h.cur.Load()
	rec := old.rec
	if rec.State != StatePendingDeletion || rec.DeletionDate == nil || s.now().Before(*rec.DeletionDate) {
		return errNotDue
	}
	rec.State = StateDeleted
	rec.Versions = make([]versionRecord, len(old.rec.Versions))
	for i, v := range old.rec.Versions {
		rec.Versions[i] = versionRecord{Version: v.Version, CreatedAt: v.CreatedAt}
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ops := []storage.Op{{Kind: storage.OpPut, Key: keyPrefix + rec.ID, Value: val, IfRevision: old.rev}}
	var names []string
	for _, n := range s.aliasesOf(rec.ID) {
		e, err := s.store.Get(ctx, aliasPath(n))
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("destroying key %s: reading alias %s: %w", rec.ID, n, err)
		}
		var a aliasRecord
		if json.Unmarshal(e.Value, &a) != nil || a.KeyID != rec.ID {
			continue // moved to another key elsewhere: not this key's to delete
		}
		ops = append(ops, storage.Op{Kind: storage.OpDelete, Key: aliasPath(n), IfRevision: e.Revision})
		names = append(names, n)
	}
	if err := s.store.Apply(ctx, ops...); err != nil {
		return fmt.Errorf("destroying key %s: %w", rec.ID, err)
	}
	k, err := s.reload(ctx, rec.ID)
	if err != nil {
		return err
	}
	h.cur.Store(k)
	old.wipe()
	for _, n := range names {
		s.dropAlias(n)
	}
	return nil
}

// Run calls Tick every interval until ctx ends. Errors go to onErr.
func (s *Service) Run(ctx context.Context, interval time.Duration, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, _, err := s.Tick(ctx); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}
