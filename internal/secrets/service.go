// Package secrets is Coffer's versioned secrets manager. A secret is a
// path-like name, metadata and numbered versions; a version is a map of
// fields. Each version is encrypted under the secret's Coffer key as an
// envelope: a fresh data key from the key service, AES-256-GCM over the
// fields, the data key wrapped under the Coffer key with the encryption
// context {"coffer-secret": name, "version": N}. The records are stored
// through the barrier, which encrypts them again.
//
// The service keeps no cache: every call reads the store, and every write
// is one atomic batch whose compare-and-swap on the metadata record's
// revision makes concurrent writers (goroutines or replicas on one etcd)
// serialize: two writers can never both create version N.
//
// Stages name versions: current (what a read without a version returns),
// previous (the current one before the last write) and pending (the new
// version of a two-phase rotation before its promotion; see Rotate).
package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
)

// Limits and defaults.
const (
	// MaxNameBytes bounds a secret's name.
	MaxNameBytes = 256
	// MaxVersionBytes bounds one version: the sum of its field names'
	// and values' lengths.
	MaxVersionBytes = 64 << 10
	// MaxFields bounds the fields of one version.
	MaxFields = 256
	// MaxFieldName bounds a field name.
	MaxFieldName = 128
	// DefaultMaxVersions and MaxMaxVersions bound the versions kept.
	DefaultMaxVersions = 10
	MaxMaxVersions     = 100
	// MaxCustom bounds the custom metadata pairs; MaxCustomKey and
	// MaxCustomValue their sizes.
	MaxCustom      = 64
	MaxCustomKey   = 128
	MaxCustomValue = 1024
	// DefaultWindow is the recovery window of a deletion; MinWindow and
	// MaxWindow bound the one a request asks for.
	DefaultWindow = 7 * 24 * time.Hour
	MinWindow     = 24 * time.Hour
	MaxWindow     = 30 * 24 * time.Hour
	// DefaultKeyDescription describes the Coffer key of secrets written
	// without one, which the service creates on first use (like AWS
	// Secrets Manager's aws/secretsmanager key).
	DefaultKeyDescription = "default key of Coffer secrets (created by the secrets manager on first use)"
	// DefaultListLimit and MaxListLimit bound a page of List.
	DefaultListLimit = 100
	MaxListLimit     = 1000
	// maxHistory bounds the version entries a secret's metadata keeps;
	// the oldest destroyed ones are dropped beyond it (reading them is
	// still "destroyed").
	maxHistory = 200
	// maxWriteAttempts bounds retries of a write that lost a
	// compare-and-swap without a check-and-set of its own.
	maxWriteAttempts = 16

	metaPrefix  = "secrets/meta/"
	dataPrefix  = "secrets/data/"
	purgePrefix = "secrets/purge/"
	configPath  = "secrets/config"
	metaFormat  = 1
)

// Stage names.
const (
	StageCurrent  = "current"
	StagePrevious = "previous"
	StagePending  = "pending"
)

// Store is what the service persists secrets in; *barrier.Barrier
// satisfies it.
type Store interface {
	Get(ctx context.Context, path string) (storage.Entry, error)
	List(ctx context.Context, prefix string) ([]string, error)
	Apply(ctx context.Context, ops ...storage.Op) error
}

// versionMeta is one version in a secret's metadata.
type versionMeta struct {
	Version     uint32     `json:"version"`
	CreatedAt   time.Time  `json:"created_at"`
	KeyID       string     `json:"key_id"`
	KeyVersion  uint32     `json:"key_version"`
	DestroyedAt *time.Time `json:"destroyed_at,omitempty"`
}

// meta is the stored metadata record of a secret (JSON inside the barrier).
type meta struct {
	Format      int               `json:"format"`
	Name        string            `json:"name"`
	Key         string            `json:"key"`
	MaxVersions int               `json:"max_versions"`
	Custom      map[string]string `json:"custom,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
	Latest      uint32            `json:"latest"`
	Current     uint32            `json:"current,omitempty"`
	Previous    uint32            `json:"previous,omitempty"`
	Pending     uint32            `json:"pending,omitempty"`
	Versions    []versionMeta     `json:"versions"`
	DeletedAt   *time.Time        `json:"deleted_at,omitempty"`
	PurgeAt     *time.Time        `json:"purge_at,omitempty"`
	Rotation    *rotationMeta     `json:"rotation,omitempty"`
}

// Service is the secrets manager.
type Service struct {
	store Store
	keys  *keys.Service
	now   func() time.Time
	rot   rotator

	// defaultID caches the default key's id once it is known: it is
	// written once and never changes.
	defaultID atomic.Pointer[string]

	// hub wakes the waiters of a secret when it changes (wait.go).
	hub hub
}

// Option configures a Service.
type Option func(*Service)

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// New builds the service over store, encrypting with ks.
func New(store Store, ks *keys.Service, opts ...Option) *Service {
	s := &Service{keys: ks, now: time.Now}
	s.store = notifyingStore{Store: store, hub: &s.hub}
	for _, o := range opts {
		o(s)
	}
	return s
}

// VersionInfo describes one version without its value.
type VersionInfo struct {
	Version     uint32
	Stages      []string
	CreatedAt   time.Time
	KeyID       string
	KeyVersion  uint32
	Destroyed   bool
	DestroyedAt time.Time
}

// Metadata describes a secret without values.
type Metadata struct {
	Name            string
	Key             string
	MaxVersions     int
	Custom          map[string]string
	CreatedAt       time.Time
	UpdatedAt       time.Time
	CurrentVersion  uint32
	PreviousVersion uint32
	PendingVersion  uint32
	LatestVersion   uint32
	// DeletedAt and PurgeAt are zero unless the secret is soft-deleted.
	DeletedAt time.Time
	PurgeAt   time.Time
	Versions  []VersionInfo
	// Rotation is nil when the secret has no rotation configuration.
	Rotation *RotationInfo
}

// Value is one version with its fields.
type Value struct {
	Name       string
	Version    uint32
	Stages     []string
	CreatedAt  time.Time
	KeyID      string
	KeyVersion uint32
	// CustomerKey is set when the version's key is not the secrets
	// manager's default key: reading it is also a use of that key, which
	// its policies may restrict (kms:Decrypt), as in AWS Secrets Manager.
	CustomerKey bool
	Fields      map[string]string
}

// PutRequest writes a new version.
type PutRequest struct {
	Name   string
	Fields map[string]string
	// Key is the Coffer key (id or alias/NAME) of this and later
	// versions; empty keeps the secret's key (for a new secret, the
	// default key, which the service creates on first use).
	Key string
	// CAS, when set, is the current version the secret must have (0: it
	// must not exist).
	CAS *uint32
}

// MetadataUpdate changes a secret's metadata.
type MetadataUpdate struct {
	MaxVersions *int
	Set         map[string]string
	Unset       []string
}

// ListEntry is one secret of a List page.
type ListEntry struct {
	Name           string
	CurrentVersion uint32
	UpdatedAt      time.Time
	DeletedAt      time.Time
}

// ListPage is one page of List; Next, when not empty, is the After of the
// next page.
type ListPage struct {
	Secrets []ListEntry
	Next    string
}

// CheckName reports whether name is a valid secret name.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: the secret name is empty", ErrInvalidArgument)
	case len(name) > MaxNameBytes:
		return fmt.Errorf("%w: the secret name is %d bytes; at most %d are allowed", ErrInvalidArgument, len(name), MaxNameBytes)
	case name[0] == '/' || name[len(name)-1] == '/':
		return fmt.Errorf("%w: secret name %q starts or ends with /", ErrInvalidArgument, name)
	}
	for i := 0; i < len(name); i++ {
		if !nameChar(name[i]) {
			return fmt.Errorf("%w: secret name %q has %q at byte %d; names use A-Z a-z 0-9 . _ - and / between segments", ErrInvalidArgument, name, name[i], i)
		}
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: secret name %q has an empty, . or .. segment", ErrInvalidArgument, name)
		}
	}
	return nil
}

func nameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/'
}

func checkFieldName(k string) error {
	if k == "" || len(k) > MaxFieldName {
		return fmt.Errorf("%w: field name %q must be 1 to %d bytes", ErrInvalidArgument, k, MaxFieldName)
	}
	if k == "." || k == ".." {
		// Fields become file names (coffer exec --file-dir, a CSI mount)
		// and Kubernetes Secret keys, neither of which may be . or ..
		return fmt.Errorf("%w: field name %q is not allowed (it names a directory as a file)", ErrInvalidArgument, k)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c == '/' || !nameChar(c) {
			return fmt.Errorf("%w: field name %q has %q; field names use A-Z a-z 0-9 . _ -", ErrInvalidArgument, k, c)
		}
	}
	return nil
}

func checkFields(f map[string]string) error {
	if len(f) == 0 {
		return fmt.Errorf("%w: a version needs at least one field", ErrInvalidArgument)
	}
	if len(f) > MaxFields {
		return fmt.Errorf("%w: %d fields; a version has at most %d", ErrInvalidArgument, len(f), MaxFields)
	}
	total := 0
	for k, v := range f {
		if err := checkFieldName(k); err != nil {
			return err
		}
		total += len(k) + len(v)
	}
	if total > MaxVersionBytes {
		return fmt.Errorf("%w: the fields total %d bytes (names and values); a version holds at most %d bytes (64 KiB)", ErrTooLarge, total, MaxVersionBytes)
	}
	return nil
}

func checkCustom(m map[string]string) error {
	if len(m) > MaxCustom {
		return fmt.Errorf("%w: %d custom metadata pairs; at most %d are allowed", ErrInvalidArgument, len(m), MaxCustom)
	}
	for k, v := range m {
		if k == "" || len(k) > MaxCustomKey {
			return fmt.Errorf("%w: custom metadata key %q must be 1 to %d bytes", ErrInvalidArgument, k, MaxCustomKey)
		}
		for i := 0; i < len(k); i++ {
			if !nameChar(k[i]) {
				return fmt.Errorf("%w: custom metadata key %q has %q; keys use A-Z a-z 0-9 . _ - /", ErrInvalidArgument, k, k[i])
			}
		}
		if len(v) > MaxCustomValue {
			return fmt.Errorf("%w: custom metadata value of %q is %d bytes; at most %d are allowed", ErrInvalidArgument, k, len(v), MaxCustomValue)
		}
	}
	return nil
}

func dataPath(name string, v uint32) string {
	// '@' never occurs in a name, so no name's data path is a prefix of
	// another's.
	return dataPrefix + name + "@" + strconv.FormatUint(uint64(v), 10)
}

func encryptionContext(name string, v uint32) map[string]string {
	return map[string]string{"coffer-secret": name, "version": strconv.FormatUint(uint64(v), 10)}
}

// load reads a secret's metadata and its revision.
func (s *Service) load(ctx context.Context, name string) (*meta, int64, error) {
	e, err := s.store.Get(ctx, metaPrefix+name)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: no secret named %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, 0, err
	}
	var m meta
	if err := json.Unmarshal(e.Value, &m); err != nil {
		return nil, 0, fmt.Errorf("secret %q: stored metadata does not parse: %w", name, err)
	}
	if m.Format != metaFormat {
		return nil, 0, fmt.Errorf("secret %q: stored metadata has unknown format %d", name, m.Format)
	}
	return &m, e.Revision, nil
}

func (m *meta) deletedErr() error {
	return fmt.Errorf("%w: secret %q was deleted on %s; undelete it before %s to use it again", ErrDeleted, m.Name,
		m.DeletedAt.Format(time.RFC3339), m.PurgeAt.Format(time.RFC3339))
}

func (m *meta) find(v uint32) *versionMeta {
	for i := range m.Versions {
		if m.Versions[i].Version == v {
			return &m.Versions[i]
		}
	}
	return nil
}

func (m *meta) stagesOf(v uint32) []string {
	var st []string
	if v == m.Current {
		st = append(st, StageCurrent)
	}
	if v == m.Previous {
		st = append(st, StagePrevious)
	}
	if v == m.Pending {
		st = append(st, StagePending)
	}
	return st
}

// prune destroys the oldest versions beyond MaxVersions that hold no stage
// and drops the oldest destroyed entries beyond maxHistory. It returns the
// data paths to delete.
func (m *meta) prune(now time.Time) []string {
	live := 0
	for _, v := range m.Versions {
		if v.DestroyedAt == nil {
			live++
		}
	}
	var del []string
	for i := range m.Versions {
		if live <= m.MaxVersions {
			break
		}
		v := &m.Versions[i]
		if v.DestroyedAt != nil || len(m.stagesOf(v.Version)) > 0 {
			continue
		}
		t := now
		v.DestroyedAt = &t
		del = append(del, dataPath(m.Name, v.Version))
		live--
	}
	for len(m.Versions) > maxHistory {
		i := slices.IndexFunc(m.Versions, func(v versionMeta) bool { return v.DestroyedAt != nil })
		if i < 0 {
			break
		}
		m.Versions = slices.Delete(m.Versions, i, i+1)
	}
	return del
}

func (s *Service) metadataOf(m *meta) Metadata {
	out := Metadata{Name: m.Name, Key: m.Key, MaxVersions: m.MaxVersions, Custom: m.Custom, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt,
		CurrentVersion: m.Current, PreviousVersion: m.Previous, PendingVersion: m.Pending, LatestVersion: m.Latest,
		Rotation: m.Rotation.info()}
	if m.DeletedAt != nil {
		out.DeletedAt, out.PurgeAt = *m.DeletedAt, *m.PurgeAt
	}
	for _, v := range m.Versions {
		vi := VersionInfo{Version: v.Version, Stages: m.stagesOf(v.Version), CreatedAt: v.CreatedAt, KeyID: v.KeyID, KeyVersion: v.KeyVersion}
		if v.DestroyedAt != nil {
			vi.Destroyed, vi.DestroyedAt = true, *v.DestroyedAt
		}
		out.Versions = append(out.Versions, vi)
	}
	return out
}

// Put writes a new version and makes it current (the current one becomes
// previous). It returns the new version's metadata.
func (s *Service) Put(ctx context.Context, req PutRequest) (VersionInfo, error) {
	if err := CheckName(req.Name); err != nil {
		return VersionInfo{}, err
	}
	if err := checkFields(req.Fields); err != nil {
		return VersionInfo{}, err
	}
	plain := encodeFields(req.Fields)
	defer clear(plain)
	for attempt := 0; ; attempt++ {
		vi, err := s.putOnce(ctx, req, plain)
		if attempt == maxWriteAttempts-1 || !errors.Is(err, storage.ErrConflict) {
			return vi, err
		}
	}
}

func (s *Service) putOnce(ctx context.Context, req PutRequest, plain []byte) (VersionInfo, error) {
	m, rev, err := s.load(ctx, req.Name)
	now := s.now().UTC()
	switch {
	case errors.Is(err, ErrNotFound):
		m = &meta{Format: metaFormat, Name: req.Name, MaxVersions: DefaultMaxVersions, CreatedAt: now}
	case err != nil:
		return VersionInfo{}, err
	case m.DeletedAt != nil:
		return VersionInfo{}, m.deletedErr()
	}
	if m.Pending != 0 {
		return VersionInfo{}, fmt.Errorf("%w: secret %q has pending version %d of a rotation; retry the rotation (coffer secret rotate) or disable it to roll back, then write", ErrRotationPending, req.Name, m.Pending)
	}
	if req.CAS != nil && *req.CAS != m.Current {
		return VersionInfo{}, &ConflictError{Name: req.Name, Want: *req.CAS, Current: m.Current}
	}
	if req.Key != "" {
		m.Key = req.Key
	}
	if m.Key == "" {
		if m.Key, err = s.defaultKey(ctx); err != nil {
			return VersionInfo{}, err
		}
	}
	n := m.Latest + 1
	ec := encryptionContext(req.Name, n)
	dk, wrapped, err := s.dataKey(ctx, m.Key, ec)
	if err != nil {
		return VersionInfo{}, err
	}
	// Record the key by id: a key named by an alias stays the secret's key
	// when the alias is later pointed elsewhere (by someone who may have
	// no right on this secret).
	m.Key = wrapped.KeyID
	val, err := sealFields(dk, n, wrapped.Ciphertext, req.Name, plain)
	clear(dk)
	if err != nil {
		return VersionInfo{}, err
	}
	vm := versionMeta{Version: n, CreatedAt: now, KeyID: wrapped.KeyID, KeyVersion: wrapped.KeyVersion}
	m.Versions = append(m.Versions, vm)
	m.Latest, m.UpdatedAt = n, now
	if m.Current != 0 {
		m.Previous = m.Current
	}
	m.Current = n
	del := m.prune(now)
	mv, err := json.Marshal(m)
	if err != nil {
		return VersionInfo{}, err
	}
	ops := []storage.Op{
		{Kind: storage.OpPut, Key: metaPrefix + req.Name, Value: mv, IfRevision: rev},
		{Kind: storage.OpPut, Key: dataPath(req.Name, n), Value: val, IfRevision: 0},
	}
	for _, p := range del {
		ops = append(ops, storage.Delete(p))
	}
	if err := s.store.Apply(ctx, ops...); err != nil {
		return VersionInfo{}, err
	}
	return VersionInfo{Version: n, Stages: m.stagesOf(n), CreatedAt: now, KeyID: vm.KeyID, KeyVersion: vm.KeyVersion}, nil
}

// dataKey makes a data key under ref, reading a key made on another
// replica into this one's cache when needed.
func (s *Service) dataKey(ctx context.Context, ref string, ec map[string]string) ([]byte, keys.Sealed, error) {
	dk, sealed, err := s.keys.GenerateDataKey(ctx, ref, 32, ec)
	if errors.Is(err, keys.ErrNotFound) && !strings.HasPrefix(ref, keys.AliasPrefix) {
		if s.keys.Reread(ctx, "keys/"+ref) == nil {
			return s.keys.GenerateDataKey(ctx, ref, 32, ec)
		}
	}
	return dk, sealed, err
}

// defaultKey returns the id of the key of secrets written without one,
// creating it on first use. Its id is stored at configPath (written once,
// with compare-and-swap); an alias would let anyone allowed to create
// aliases point it at a key of their own before the first secret is
// written (alias/coffer/ is reserved to Coffer, and the key service keeps
// it so).
func (s *Service) defaultKey(ctx context.Context) (string, error) {
	id, err := s.storedDefaultKey(ctx)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	k, err := s.keys.Create(ctx, keys.CreateRequest{Description: DefaultKeyDescription})
	if err != nil {
		return "", fmt.Errorf("creating the default key of secrets: %w", err)
	}
	v, _ := json.Marshal(secretsConfig{DefaultKeyID: k.ID})
	err = s.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: configPath, Value: v, IfRevision: 0})
	if errors.Is(err, storage.ErrConflict) {
		// Another replica made one first: use it, and let ours go.
		_, _ = s.keys.ScheduleDeletion(ctx, k.ID, keys.MinPendingDays)
		return s.defaultKey(ctx)
	}
	if err != nil {
		return "", err
	}
	s.defaultID.Store(&k.ID)
	return k.ID, nil
}

// isDefaultKey reports whether id is the default key of secrets, without
// creating one. A store with no default key yet has none to compare.
func (s *Service) isDefaultKey(ctx context.Context, id string) (bool, error) {
	d, err := s.storedDefaultKey(ctx)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return d == id, err
}

// Unload forgets the cached default key id (on seal: the store unsealed
// next may be a restored one with another default key) and wakes every
// waiter, whose reads then fail as sealed.
func (s *Service) Unload() {
	s.defaultID.Store(nil)
	s.hub.notifyAll()
}

// secretsConfig is the record at configPath.
type secretsConfig struct {
	DefaultKeyID string `json:"default_key_id"`
}

// storedDefaultKey returns the default key's id from the cache or the
// store (storage.ErrNotFound when none was made yet); it never changes
// once written, so it is cached.
func (s *Service) storedDefaultKey(ctx context.Context) (string, error) {
	if d := s.defaultID.Load(); d != nil {
		return *d, nil
	}
	e, err := s.store.Get(ctx, configPath)
	if err != nil {
		return "", err
	}
	var c secretsConfig
	if err := json.Unmarshal(e.Value, &c); err != nil || c.DefaultKeyID == "" {
		return "", fmt.Errorf("the secrets configuration (%s) does not parse", configPath)
	}
	s.defaultID.Store(&c.DefaultKeyID)
	return c.DefaultKeyID, nil
}

// sealFields encrypts plain (encoded fields) under dk into a version record.
func sealFields(dk []byte, v uint32, wrapped []byte, name string, plain []byte) ([]byte, error) {
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	return sealWithNonce(dk, v, wrapped, name, plain, nonce)
}

// sealWithNonce is sealFields with the nonce given (test vectors).
func sealWithNonce(dk []byte, v uint32, wrapped []byte, name string, plain, nonce []byte) ([]byte, error) {
	if len(wrapped) == 0 || len(wrapped) > maxWrappedKey {
		return nil, fmt.Errorf("wrapped data key of %d bytes", len(wrapped))
	}
	aead, err := newGCM(dk)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, headerFixed+len(wrapped)+nonceSize+len(plain)+tagSize+len(name))
	out = appendHeader(out, v, wrapped)
	head := len(out)
	aad := append(out[:head:head], name...) // a copy: the nonce goes after the header
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, aad), nil
}

func newGCM(k []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// selectVersion picks the version a read names: version when not 0, else
// the stage (current when empty).
func (m *meta) selectVersion(version uint32, stage string) (uint32, error) {
	if version != 0 {
		if version > m.Latest {
			return 0, fmt.Errorf("%w: secret %q has no version %d (latest is %d)", ErrVersionNotFound, m.Name, version, m.Latest)
		}
		return version, nil
	}
	var v uint32
	switch stage {
	case "", StageCurrent:
		v, stage = m.Current, StageCurrent
	case StagePrevious:
		v = m.Previous
	case StagePending:
		v = m.Pending
	default:
		return 0, fmt.Errorf("%w: unknown stage %q; stages are current, previous and pending", ErrInvalidArgument, stage)
	}
	if v == 0 {
		return 0, fmt.Errorf("%w: secret %q has no %s version", ErrVersionNotFound, m.Name, stage)
	}
	return v, nil
}

// Get reads a version's fields: version when not 0, else the stage
// (current when empty).
func (s *Service) Get(ctx context.Context, name string, version uint32, stage string) (Value, error) {
	if err := CheckName(name); err != nil {
		return Value{}, err
	}
	m, _, err := s.load(ctx, name)
	if err != nil {
		return Value{}, err
	}
	if m.DeletedAt != nil {
		return Value{}, m.deletedErr()
	}
	v, err := m.selectVersion(version, stage)
	if err != nil {
		return Value{}, err
	}
	vm := m.find(v)
	if vm == nil || vm.DestroyedAt != nil {
		return Value{}, fmt.Errorf("%w: version %d of secret %q was destroyed; its data is gone (see its history)", ErrDestroyed, v, name)
	}
	e, err := s.store.Get(ctx, dataPath(name, v))
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			// Destroyed by a concurrent write after the metadata was read.
			return Value{}, fmt.Errorf("%w: version %d of secret %q was destroyed; its data is gone", ErrDestroyed, v, name)
		}
		return Value{}, err
	}
	def, err := s.isDefaultKey(ctx, vm.KeyID)
	if err != nil {
		return Value{}, err
	}
	fields, err := s.open(ctx, name, v, vm.KeyID, e.Value)
	if err != nil {
		return Value{}, err
	}
	return Value{Name: name, Version: v, Stages: m.stagesOf(v), CreatedAt: vm.CreatedAt, KeyID: vm.KeyID, KeyVersion: vm.KeyVersion,
		CustomerKey: !def, Fields: fields}, nil
}

// open decrypts a stored version record of (name, v).
func (s *Service) open(ctx context.Context, name string, v uint32, keyID string, val []byte) (map[string]string, error) {
	rec, err := parseRecord(val)
	if err != nil {
		return nil, fmt.Errorf("secret %q version %d: %w", name, v, err)
	}
	if rec.Version != v {
		return nil, fmt.Errorf("secret %q version %d: %w: the record is of version %d", name, v, errFormat, rec.Version)
	}
	ec := encryptionContext(name, v)
	opened, err := s.keys.Decrypt(ctx, rec.Wrapped, ec, "")
	if errors.Is(err, keys.ErrNotFound) && keyID != "" {
		// A key made on another replica that this one has not followed yet.
		if rerr := s.keys.Reread(ctx, "keys/"+keyID); rerr == nil {
			opened, err = s.keys.Decrypt(ctx, rec.Wrapped, ec, "")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("secret %q version %d: unwrapping its data key: %w", name, v, err)
	}
	defer clear(opened.Plaintext)
	aead, err := newGCM(opened.Plaintext)
	if err != nil {
		return nil, fmt.Errorf("secret %q version %d: %w: bad data key", name, v, errFormat)
	}
	aad := append(append([]byte(nil), rec.AADHead...), name...)
	plain, err := aead.Open(nil, rec.Nonce, rec.Sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("secret %q version %d: %w: authentication failed", name, v, errFormat)
	}
	defer clear(plain)
	return decodeFields(plain)
}

// Describe returns a secret's metadata and version history (no values).
// It works for deleted secrets too.
func (s *Service) Describe(ctx context.Context, name string) (Metadata, error) {
	if err := CheckName(name); err != nil {
		return Metadata{}, err
	}
	m, _, err := s.load(ctx, name)
	if err != nil {
		return Metadata{}, err
	}
	return s.metadataOf(m), nil
}

// update applies change to a secret's metadata and stores it with
// compare-and-swap, retrying on concurrent writes. change returns the data
// paths to delete in the same batch, plus extra ops.
func (s *Service) update(ctx context.Context, name string, change func(m *meta, now time.Time) ([]storage.Op, error)) (Metadata, error) {
	if err := CheckName(name); err != nil {
		return Metadata{}, err
	}
	for attempt := 0; ; attempt++ {
		m, rev, err := s.load(ctx, name)
		if err != nil {
			return Metadata{}, err
		}
		now := s.now().UTC()
		extra, err := change(m, now)
		if err != nil {
			return Metadata{}, err
		}
		m.UpdatedAt = now
		mv, err := json.Marshal(m)
		if err != nil {
			return Metadata{}, err
		}
		ops := append([]storage.Op{{Kind: storage.OpPut, Key: metaPrefix + name, Value: mv, IfRevision: rev}}, extra...)
		err = s.store.Apply(ctx, ops...)
		if err == nil {
			return s.metadataOf(m), nil
		}
		if attempt == maxWriteAttempts-1 || !errors.Is(err, storage.ErrConflict) {
			return Metadata{}, err
		}
	}
}

// UpdateMetadata changes max_versions and custom metadata; lowering
// max_versions destroys the versions beyond it at once.
func (s *Service) UpdateMetadata(ctx context.Context, name string, u MetadataUpdate) (Metadata, error) {
	if u.MaxVersions != nil && (*u.MaxVersions < 1 || *u.MaxVersions > MaxMaxVersions) {
		return Metadata{}, fmt.Errorf("%w: max_versions must be 1 to %d, not %d", ErrInvalidArgument, MaxMaxVersions, *u.MaxVersions)
	}
	if err := checkCustom(u.Set); err != nil {
		return Metadata{}, err
	}
	return s.update(ctx, name, func(m *meta, now time.Time) ([]storage.Op, error) {
		if m.DeletedAt != nil {
			return nil, m.deletedErr()
		}
		if u.MaxVersions != nil {
			m.MaxVersions = *u.MaxVersions
		}
		if len(u.Set) > 0 || len(u.Unset) > 0 {
			c := make(map[string]string, len(m.Custom)+len(u.Set))
			for k, v := range m.Custom {
				c[k] = v
			}
			for _, k := range u.Unset {
				delete(c, k)
			}
			for k, v := range u.Set {
				c[k] = v
			}
			if err := checkCustom(c); err != nil {
				return nil, err
			}
			m.Custom = c
		}
		var ops []storage.Op
		for _, p := range m.prune(now) {
			ops = append(ops, storage.Delete(p))
		}
		return ops, nil
	})
}

// Delete soft-deletes a secret: it cannot be read or written until
// Undelete, and is purged (every version erased) after window (0:
// DefaultWindow).
func (s *Service) Delete(ctx context.Context, name string, window time.Duration) (Metadata, error) {
	if window == 0 {
		window = DefaultWindow
	}
	if window < MinWindow || window > MaxWindow {
		return Metadata{}, fmt.Errorf("%w: the recovery window must be 1d to 30d, not %s", ErrInvalidArgument, window)
	}
	return s.update(ctx, name, func(m *meta, now time.Time) ([]storage.Op, error) {
		if m.DeletedAt != nil {
			return nil, m.deletedErr()
		}
		purge := now.Add(window)
		m.DeletedAt, m.PurgeAt = &now, &purge
		// The purge job lists these markers, not every secret.
		return []storage.Op{storage.Put(purgePrefix+name, []byte(purge.Format(time.RFC3339Nano)))}, nil
	})
}

// Undelete restores a soft-deleted secret within its recovery window.
func (s *Service) Undelete(ctx context.Context, name string) (Metadata, error) {
	return s.update(ctx, name, func(m *meta, now time.Time) ([]storage.Op, error) {
		if m.DeletedAt == nil {
			return nil, fmt.Errorf("%w: secret %q is not deleted", ErrNotDeleted, name)
		}
		if !now.Before(*m.PurgeAt) {
			return nil, fmt.Errorf("%w: secret %q was deleted on %s and its recovery window ended on %s; it is being purged and cannot be restored",
				ErrWindowEnded, name, m.DeletedAt.Format(time.RFC3339), m.PurgeAt.Format(time.RFC3339))
		}
		m.DeletedAt, m.PurgeAt = nil, nil
		return []storage.Op{storage.Delete(purgePrefix + name)}, nil
	})
}

// Destroy erases the data of versions (irreversible); their metadata
// stays, marked destroyed. Destroying a destroyed version does nothing.
func (s *Service) Destroy(ctx context.Context, name string, versions []uint32) (Metadata, error) {
	if len(versions) == 0 || len(versions) > MaxMaxVersions {
		return Metadata{}, fmt.Errorf("%w: name 1 to %d versions to destroy", ErrInvalidArgument, MaxMaxVersions)
	}
	return s.update(ctx, name, func(m *meta, now time.Time) ([]storage.Op, error) {
		if m.DeletedAt != nil {
			return nil, m.deletedErr()
		}
		var ops []storage.Op
		seen := map[uint32]bool{}
		for _, v := range versions {
			if v == 0 || v > m.Latest {
				return nil, fmt.Errorf("%w: secret %q has no version %d (latest is %d)", ErrVersionNotFound, name, v, m.Latest)
			}
			vm := m.find(v)
			if vm == nil || vm.DestroyedAt != nil || seen[v] {
				continue
			}
			seen[v] = true
			t := now
			vm.DestroyedAt = &t
			ops = append(ops, storage.Delete(dataPath(name, v)))
		}
		return ops, nil
	})
}

// List returns a page of the secrets whose names start with prefix, after
// the name after, at most limit (0: DefaultListLimit) of them.
func (s *Service) List(ctx context.Context, prefix, after string, limit int) (ListPage, error) {
	if limit == 0 {
		limit = DefaultListLimit
	}
	if limit < 1 || limit > MaxListLimit {
		return ListPage{}, fmt.Errorf("%w: limit must be 1 to %d, not %d", ErrInvalidArgument, MaxListLimit, limit)
	}
	if len(prefix) > MaxNameBytes || len(after) > MaxNameBytes {
		return ListPage{}, fmt.Errorf("%w: prefix and after are at most %d bytes", ErrInvalidArgument, MaxNameBytes)
	}
	for i := 0; i < len(prefix); i++ {
		if !nameChar(prefix[i]) {
			return ListPage{}, fmt.Errorf("%w: prefix %q has %q; names use A-Z a-z 0-9 . _ - /", ErrInvalidArgument, prefix, prefix[i])
		}
	}
	paths, err := s.store.List(ctx, metaPrefix+prefix)
	if err != nil {
		return ListPage{}, err
	}
	page := ListPage{Secrets: []ListEntry{}}
	for _, p := range paths {
		name := strings.TrimPrefix(p, metaPrefix)
		if name <= after && after != "" {
			continue
		}
		if len(page.Secrets) == limit {
			page.Next = page.Secrets[len(page.Secrets)-1].Name
			break
		}
		m, _, err := s.load(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue // purged meanwhile
		}
		if err != nil {
			return ListPage{}, err
		}
		le := ListEntry{Name: name, CurrentVersion: m.Current, UpdatedAt: m.UpdatedAt}
		if m.DeletedAt != nil {
			le.DeletedAt = *m.DeletedAt
		}
		page.Secrets = append(page.Secrets, le)
	}
	return page, nil
}

// dropMarker removes a stale purge marker only if the secret's metadata is
// still at the revision the purge looked at (0: absent). Otherwise the
// secret was deleted again (or created and deleted) in between and the
// marker is the new deletion's: removing it would leave that secret
// deleted and never purged. A conflict leaves the marker to the next run.
func (s *Service) dropMarker(ctx context.Context, marker, name string, rev int64) error {
	err := s.store.Apply(ctx, storage.Op{Kind: storage.OpCheck, Key: metaPrefix + name, IfRevision: rev}, storage.Delete(marker))
	if errors.Is(err, storage.ErrConflict) {
		return nil
	}
	return err
}

// Purge erases the secrets whose recovery window ended: their metadata and
// every version, each secret in one batch conditional on its metadata's
// revision (an undelete that wins keeps the secret). It runs as a
// background job on the job leader.
func (s *Service) Purge(ctx context.Context) (int, error) {
	marks, err := s.store.List(ctx, purgePrefix)
	if err != nil {
		return 0, err
	}
	now := s.now().UTC()
	n := 0
	var errs []error
	for _, p := range marks {
		name := strings.TrimPrefix(p, purgePrefix)
		m, rev, err := s.load(ctx, name)
		if errors.Is(err, ErrNotFound) {
			errs = append(errs, s.dropMarker(ctx, p, name, 0))
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if m.DeletedAt == nil {
			// Undeleted, and the marker was left by an older write.
			errs = append(errs, s.dropMarker(ctx, p, name, rev))
			continue
		}
		if now.Before(*m.PurgeAt) {
			continue
		}
		data, err := s.store.List(ctx, dataPrefix+name+"@")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ops := []storage.Op{{Kind: storage.OpDelete, Key: metaPrefix + name, IfRevision: rev}, storage.Delete(p)}
		for _, d := range data {
			ops = append(ops, storage.Delete(d))
		}
		if err := s.store.Apply(ctx, ops...); err != nil {
			if !errors.Is(err, storage.ErrConflict) {
				errs = append(errs, err)
			}
			continue // changed meanwhile: decided again next run
		}
		n++
	}
	return n, errors.Join(errs...)
}
