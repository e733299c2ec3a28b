package iam

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cofferkms/coffer/credential"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/storage"
)

// accessKeyRecord is a stored access key: the secret as SHA-256 (it
// carries 240 random bits, so a fast hash suffices) for Basic
// authentication, and, for keys created since the AWS KMS door exists, the
// secret itself as SigningSecret: AWS Signature Version 4 is an HMAC keyed
// by the secret (through a date-dependent derivation), which a verifier
// cannot recompute from a hash. The record lives inside the barrier (the
// IAM store is the barrier), so the secret is encrypted at rest like key
// material; it is never in a view, a log or an error.
type accessKeyRecord struct {
	ID            string   `json:"id"`
	Hash          []byte   `json:"hash"`
	SigningSecret string   `json:"sigv4_secret,omitempty"`
	Description   string   `json:"description,omitempty"`
	Policies      []string `json:"policies"`
	Disabled      bool     `json:"disabled,omitempty"`
	// Leaked marks a key disabled because its secret was reported found
	// where it should not be (coffer scan --report-to).
	Leaked     bool      `json:"leaked,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	LastSource string    `json:"last_source,omitempty"`
}

func (a *accessKeyRecord) view() AccessKey {
	v := AccessKey{ID: a.ID, Description: a.Description, Policies: a.Policies, Enabled: !a.Disabled, CreatedAt: a.CreatedAt,
		LastSource: a.LastSource}
	if !a.ExpiresAt.IsZero() {
		t := a.ExpiresAt
		v.ExpiresAt = &t
	}
	if !a.LastUsedAt.IsZero() {
		t := a.LastUsedAt
		v.LastUsedAt = &t
	}
	return v
}

// CreateAccessKey makes an access key carrying policies. The secret is in
// the answer only.
func (s *Service) CreateAccessKey(ctx context.Context, req CreateAccessKeyRequest) (CreatedAccessKey, error) {
	if len(req.Description) > maxDescLen {
		return CreatedAccessKey{}, fmt.Errorf("%w: description is longer than %d bytes", ErrInvalidArgument, maxDescLen)
	}
	exp, err := parseDuration("expires_in", req.ExpiresIn)
	if err != nil {
		return CreatedAccessKey{}, err
	}
	if req.Policies == nil {
		req.Policies = []string{}
	}
	id, secret := credential.NewAccessKey()
	sum := sha256.Sum256([]byte(secret))
	now := s.now().UTC()
	rec := accessKeyRecord{ID: id, Hash: sum[:], SigningSecret: secret, Description: req.Description, Policies: req.Policies, CreatedAt: now}
	if exp > 0 {
		rec.ExpiresAt = now.Add(exp)
	}
	err = s.change(func(st *state) error {
		if err := checkPolicyNames(req.Policies); err != nil {
			return err
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		// Created only if absent (the id is random, so it always is), and
		// only while its policies are stored.
		conds := func() ([]storage.Op, error) { return s.policyConds(ctx, req.Policies) }
		if err := s.writeStoredWith(ctx, accessKeyPath+id, "access key "+id, conds, func(cur []byte) ([]byte, error) {
			if cur != nil {
				return nil, fmt.Errorf("%w: access key %s", ErrExists, id)
			}
			return b, nil
		}); err != nil {
			return err
		}
		st.accessKeys[id] = &accessKeyEntry{accessKeyRecord: rec, set: st.setOf(rec.Policies)}
		return nil
	})
	if err != nil {
		return CreatedAccessKey{}, err
	}
	return CreatedAccessKey{AccessKey: rec.view(), SecretAccessKey: secret}, nil
}

// AuthenticateAccessKey checks an access key id and secret presented from
// src. Failures say which check failed but never how the secret differs,
// and never repeat a malformed id (it may be the secret, sent in the id's
// place). A failure for a well-formed id is an *auth.AttributedError, so
// the audit trail records it against that key.
func (s *Service) AuthenticateAccessKey(id, secret string, src netip.Addr) (auth.Principal, error) {
	if !credential.Valid(credential.AccessKeyIDPrefix, id) {
		hint := ""
		if k, ok := credential.Kind(id); ok && k != credential.KindAccessKeyID {
			hint = "; it looks like a secret: send the id as the user name and the secret as the password, and treat that secret as exposed"
		}
		return auth.Principal{}, fmt.Errorf("%w: the user name is not an access key id (they start with %s_ and carry a checksum)%s", auth.ErrUnauthenticated, credential.AccessKeyIDPrefix, hint)
	}
	fail := func(err error) (auth.Principal, error) {
		return auth.Principal{}, &auth.AttributedError{Kind: auth.KindAccessKey, ID: id, Err: err}
	}
	a := s.state.Load().accessKeys[id]
	sum := sha256.Sum256([]byte(secret))
	if a == nil {
		return fail(fmt.Errorf("%w: access key %s is unknown or was deleted", auth.ErrUnauthenticated, id))
	}
	if subtle.ConstantTimeCompare(a.Hash, sum[:]) != 1 {
		return fail(fmt.Errorf("%w: the secret does not match access key %s", auth.ErrUnauthenticated, id))
	}
	return s.acceptAccessKey(id, a, src)
}

// AuthenticateAccessKeySigned authenticates a request signed with access
// key id's secret (AWS Signature Version 4): verify gets the secret and
// reports whether the request's signature was made with it. The secret
// never leaves this call's verify; the key's other checks (leaked,
// disabled, expired) are those of AuthenticateAccessKey. Keys created
// before signing secrets were kept cannot sign.
func (s *Service) AuthenticateAccessKeySigned(id string, src netip.Addr, verify func(secret string) error) (auth.Principal, error) {
	if !credential.Valid(credential.AccessKeyIDPrefix, id) {
		return auth.Principal{}, fmt.Errorf("%w: the credential's access key id is not a Coffer access key id (they start with %s_ and carry a checksum)", auth.ErrUnauthenticated, credential.AccessKeyIDPrefix)
	}
	fail := func(err error) (auth.Principal, error) {
		return auth.Principal{}, &auth.AttributedError{Kind: auth.KindAccessKey, ID: id, Err: err}
	}
	a := s.state.Load().accessKeys[id]
	if a == nil {
		return fail(fmt.Errorf("%w: access key %s is unknown or was deleted", auth.ErrUnauthenticated, id))
	}
	if a.SigningSecret == "" {
		return fail(fmt.Errorf("%w: access key %s was created before Coffer kept signing secrets and cannot sign requests; create a new access key", auth.ErrUnauthenticated, id))
	}
	if err := verify(a.SigningSecret); err != nil {
		return fail(err)
	}
	return s.acceptAccessKey(id, a, src)
}

// acceptAccessKey is the rest of an access key's authentication once its
// secret was proven: the key's state, and its last use.
func (s *Service) acceptAccessKey(id string, a *accessKeyEntry, src netip.Addr) (auth.Principal, error) {
	fail := func(err error) (auth.Principal, error) {
		return auth.Principal{}, &auth.AttributedError{Kind: auth.KindAccessKey, ID: id, Err: err}
	}
	now := s.now()
	if a.Leaked {
		return fail(&auth.LeakedError{Accessor: id, Kind: "access key"})
	}
	if a.Disabled {
		return fail(fmt.Errorf("%w: access key %s is disabled", auth.ErrUnauthenticated, id))
	}
	if !a.ExpiresAt.IsZero() && !now.Before(a.ExpiresAt) {
		return fail(fmt.Errorf("%w: access key %s expired at %s", auth.ErrUnauthenticated, id, a.ExpiresAt.Format(time.RFC3339)))
	}
	s.usageMu.Lock()
	s.usage[id] = usage{at: now.UTC(), source: src.String()}
	s.usageMu.Unlock()
	return auth.Principal{Kind: auth.KindAccessKey, ID: id, DisplayName: a.Description, Policies: a.Policies, CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt}, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// LastUse returns when an access key was last used and from where,
// counting uses not yet stored; ok is false if it never was.
func (s *Service) LastUse(id string) (time.Time, string, bool) {
	s.usageMu.Lock()
	u, ok := s.usage[id]
	s.usageMu.Unlock()
	if ok {
		return u.at, u.source, true
	}
	if a := s.state.Load().accessKeys[id]; a != nil && !a.LastUsedAt.IsZero() {
		return a.LastUsedAt, a.LastSource, true
	}
	return time.Time{}, "", false
}

// FlushUsage stores the access keys' last-use times gathered since the
// last flush (the server calls it every minute and on shutdown), so a use
// costs no write on the request path.
//
// Every replica flushes the uses it observed. Each key's stored record is
// read, given the later of its stored and observed last use, and written
// back with compare-and-swap on the revision read (read again on a
// conflict): a flush never overwrites what another replica changed in the
// meantime (a disable above all), and an earlier use never replaces a
// later one stored by another replica.
func (s *Service) FlushUsage(ctx context.Context) error {
	s.usageMu.Lock()
	pending := s.usage
	s.usage = map[string]usage{}
	s.usageMu.Unlock()
	var errs []error
	for id, u := range pending {
		if err := s.flushUse(ctx, id, u); err != nil {
			errs = append(errs, err)
			// Keep the use for the next flush (a newer use recorded
			// meanwhile wins).
			s.usageMu.Lock()
			if cur, ok := s.usage[id]; !ok || cur.at.Before(u.at) {
				s.usage[id] = u
			}
			s.usageMu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// maxFlushAttempts bounds the re-reads of one key's record whose revision
// moved on between the read and the write of a usage flush.
const maxFlushAttempts = 8

// flushUse merges one observed use into access key id's stored record.
func (s *Service) flushUse(ctx context.Context, id string, u usage) error {
	path := accessKeyPath + id
	for range maxFlushAttempts {
		e, err := s.store.Get(ctx, path)
		if errors.Is(err, storage.ErrNotFound) {
			return nil // deleted since it was used
		}
		if err != nil {
			return err
		}
		var rec accessKeyRecord
		if err := json.Unmarshal(e.Value, &rec); err != nil {
			return fmt.Errorf("access key %s: malformed stored record", id)
		}
		if u.at.After(rec.LastUsedAt) {
			rec.LastUsedAt, rec.LastSource = u.at, u.source
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			err = s.store.Apply(ctx, storage.Op{Kind: storage.OpPut, Key: path, Value: b, IfRevision: e.Revision})
			if errors.Is(err, storage.ErrConflict) {
				continue
			}
			if err != nil {
				return err
			}
		}
		// The cache takes the stored last use; the rest of the record
		// reaches it the way every change does.
		return s.change(func(st *state) error {
			if a := st.accessKeys[id]; a != nil && a.LastUsedAt.Before(rec.LastUsedAt) {
				c := *a
				c.LastUsedAt, c.LastSource = rec.LastUsedAt, rec.LastSource
				st.accessKeys[id] = &c
			}
			return nil
		})
	}
	return fmt.Errorf("access key %s: its record kept changing during the usage flush; it is retried at the next one: %w", id, storage.ErrConflict)
}

func (s *Service) accessKeyView(a *accessKeyEntry) AccessKey {
	v := a.view()
	if at, src, ok := s.LastUse(a.ID); ok {
		v.LastUsedAt, v.LastSource = &at, src
	}
	return v
}

// GetAccessKey describes an access key.
func (s *Service) GetAccessKey(_ context.Context, id string) (AccessKey, error) {
	a := s.state.Load().accessKeys[id]
	if a == nil {
		return AccessKey{}, notFoundKey(id)
	}
	return s.accessKeyView(a), nil
}

func notFoundKey(id string) error {
	if !strings.HasPrefix(id, credential.AccessKeyIDPrefix+"_") {
		// Not repeated: it may be a secret typed in the id's place.
		return fmt.Errorf("%w: that is not an access key id (they start with %s_)", ErrInvalidArgument, credential.AccessKeyIDPrefix)
	}
	return fmt.Errorf("%w: access key %q does not exist", ErrNotFound, id)
}

// ListAccessKeys describes every access key, by id.
func (s *Service) ListAccessKeys(_ context.Context) []AccessKey {
	st := s.state.Load()
	out := make([]AccessKey, 0, len(st.accessKeys))
	for _, a := range st.accessKeys {
		out = append(out, s.accessKeyView(a))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// UpdateAccessKey enables, disables, re-describes or re-attaches an access
// key. Disabling takes effect on the key's next request.
func (s *Service) UpdateAccessKey(ctx context.Context, id string, req UpdateAccessKeyRequest) (AccessKey, error) {
	return s.UpdateAccessKeyBy(ctx, nil, id, req)
}

// UpdateAccessKeyBy is UpdateAccessKey asked for by caller (nil: the
// server itself). A caller updating its own key (the key itself, a token
// made from it, or a role session it obtained) may not escalate: it may
// attach only policies it holds now and may not re-enable the key.
//
// The update applies to the stored record, and the self-update rules are
// decided on it, not on this replica's cache: a key disabled, or a policy
// detached, on another replica a moment ago stays so (writeStored).
func (s *Service) UpdateAccessKeyBy(ctx context.Context, caller *auth.Principal, id string, req UpdateAccessKeyRequest) (AccessKey, error) {
	if req.Description != nil && len(*req.Description) > maxDescLen {
		return AccessKey{}, fmt.Errorf("%w: description is longer than %d bytes", ErrInvalidArgument, maxDescLen)
	}
	var out AccessKey
	err := s.change(func(st *state) error {
		var conds func() ([]storage.Op, error)
		if req.Policies != nil {
			if err := checkPolicyNames(*req.Policies); err != nil {
				return err
			}
			conds = func() ([]storage.Op, error) { return s.policyConds(ctx, *req.Policies) }
		}
		var c accessKeyEntry
		err := s.writeStoredWith(ctx, accessKeyPath+id, "access key "+id, conds, func(cur []byte) ([]byte, error) {
			if cur == nil {
				return nil, notFoundKey(id)
			}
			stored, err := decodeAccessKey(id, cur)
			if err != nil {
				return nil, err
			}
			// The stored record replaces the cached one in this working
			// copy before the checks, so what the caller holds through
			// this very key is what is stored too.
			st.accessKeys[id] = &accessKeyEntry{accessKeyRecord: stored, set: st.setOf(stored.Policies)}
			if err := st.checkSelfUpdate(caller, st.accessKeys[id], req); err != nil {
				return nil, err
			}
			c = accessKeyEntry{accessKeyRecord: stored}
			if req.Enabled != nil {
				c.Disabled = !*req.Enabled
			}
			if req.Description != nil {
				c.Description = *req.Description
			}
			if req.Policies != nil {
				c.Policies = *req.Policies
				if c.Policies == nil {
					c.Policies = []string{}
				}
			}
			return json.Marshal(c.accessKeyRecord)
		})
		if err != nil {
			return err
		}
		c.set = st.setOf(c.Policies)
		st.accessKeys[id] = &c
		out = s.accessKeyView(&c)
		return nil
	})
	return out, err
}

// decodeAccessKey reads a stored access key record.
func decodeAccessKey(id string, v []byte) (accessKeyRecord, error) {
	var a accessKeyRecord
	if err := json.Unmarshal(v, &a); err != nil || len(a.Hash) != 32 || a.ID != id {
		return accessKeyRecord{}, fmt.Errorf("access key %s: malformed stored record", id)
	}
	return a, nil
}

// DeleteAccessKey deletes an access key; it fails from its next request.
// Tokens obtained with it stay valid until they expire unless revoked with
// RevokePrincipal("access-key:ID").
//
// Whether the key exists is decided on the stored record, not the cache.
func (s *Service) DeleteAccessKey(ctx context.Context, id string) error {
	return s.change(func(st *state) error {
		err := s.writeStored(ctx, accessKeyPath+id, "access key "+id, func(cur []byte) ([]byte, error) {
			if cur == nil {
				return nil, notFoundKey(id)
			}
			return nil, nil
		})
		if err != nil {
			return err
		}
		delete(st.accessKeys, id)
		return nil
	})
}

// ReportLeaked disables the access keys whose secret's SHA-256 (hex,
// lower case) is in fingerprints and marks them leaked, so a later use is
// recognised (auth.ErrLeaked) and alerted on. It returns the ids of the
// keys it disabled and how many were reported before.
//
// The keys are changed as stored, not as cached: a stored key this
// replica has not heard of yet is found too, and a change another replica
// made to a reported key meanwhile is kept (compare-and-swap on each
// record, decided again on a conflict).
func (s *Service) ReportLeaked(ctx context.Context, fingerprints []string) (disabled []string, already int, err error) {
	want := make(map[string]bool, len(fingerprints))
	for _, fp := range fingerprints {
		want[strings.ToLower(fp)] = true
	}
	var writeErr error
	err = s.change(func(st *state) error {
		var candidates []string
		for id, a := range st.accessKeys {
			if want[hex.EncodeToString(a.Hash)] {
				candidates = append(candidates, id)
			}
		}
		paths, err := s.store.List(ctx, accessKeyPath)
		if err != nil {
			return err
		}
		for _, p := range paths {
			if id := strings.TrimPrefix(p, accessKeyPath); st.accessKeys[id] == nil {
				candidates = append(candidates, id)
			}
		}
		// At most leakBatch keys per write, below etcd's --max-txn-ops.
		// Each write lands whole or not at all, in storage as in memory;
		// after a failure the keys of the writes done stay disabled (and
		// are published here), and the report can be sent again: it
		// counts them as already reported.
		for len(candidates) > 0 {
			n := min(len(candidates), leakBatch)
			d, a, err := s.reportBatch(ctx, st, want, candidates[:n])
			if err != nil {
				if len(disabled) > 0 {
					err = fmt.Errorf("disabled %d of the reported access keys before: %w", len(disabled), err)
				}
				writeErr = err
				return nil
			}
			disabled, already = append(disabled, d...), already+a
			candidates = candidates[n:]
		}
		return nil
	})
	if err == nil {
		err = writeErr
	}
	if err != nil {
		return nil, 0, err
	}
	sort.Strings(disabled)
	return disabled, already, nil
}

// leakBatch bounds the access keys of one leak report write.
const leakBatch = 100

// reportBatch marks those of candidates with a wanted fingerprint leaked
// in one write, as stored, and puts them in st.
func (s *Service) reportBatch(ctx context.Context, st *state, want map[string]bool, candidates []string) (disabled []string, already int, err error) {
	for range maxWriteAttempts {
		var updated map[string]*accessKeyEntry
		var ops []storage.Op
		updated, ops, disabled, already, err = s.leakOps(ctx, st, want, candidates)
		if err != nil {
			return nil, 0, err
		}
		if len(ops) == 0 {
			return disabled, already, nil
		}
		if err = s.store.Apply(ctx, ops...); errors.Is(err, storage.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		maps.Copy(st.accessKeys, updated)
		return disabled, already, nil
	}
	return nil, 0, fmt.Errorf("the reported access keys were changed on other replicas %d times while the report was being applied; send it again: %w", maxWriteAttempts, storage.ErrConflict)
}

// leakOps reads the candidates' stored records and returns the writes that
// mark those with a wanted fingerprint leaked, each conditional on the
// revision read.
func (s *Service) leakOps(ctx context.Context, st *state, want map[string]bool, candidates []string) (updated map[string]*accessKeyEntry, ops []storage.Op, disabled []string, already int, err error) {
	updated = map[string]*accessKeyEntry{}
	for _, id := range candidates {
		e, err := s.store.Get(ctx, accessKeyPath+id)
		if errors.Is(err, storage.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, nil, nil, 0, err
		}
		rec, err := decodeAccessKey(id, e.Value)
		if err != nil {
			return nil, nil, nil, 0, err
		}
		if !want[hex.EncodeToString(rec.Hash)] {
			continue
		}
		if rec.Leaked {
			already++
			continue
		}
		rec.Leaked, rec.Disabled = true, true
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, nil, nil, 0, err
		}
		ops = append(ops, storage.Op{Kind: storage.OpPut, Key: accessKeyPath + id, Value: b, IfRevision: e.Revision})
		updated[id] = &accessKeyEntry{accessKeyRecord: rec, set: st.setOf(rec.Policies)}
		disabled = append(disabled, id)
	}
	return updated, ops, disabled, already, nil
}

// ownsKey reports whether caller acts as access key id: the key itself, a
// token made from it, or a session obtained with it.
func ownsKey(caller *auth.Principal, id string) bool {
	return caller.Kind == auth.KindAccessKey && caller.ID == id || caller.AccessKey == id || caller.Subject == auth.KindAccessKey+":"+id
}

// checkSelfUpdate refuses an update by which a caller would grant its own
// access key rights it does not hold.
func (st *state) checkSelfUpdate(caller *auth.Principal, a *accessKeyEntry, req UpdateAccessKeyRequest) error {
	if caller == nil || caller.Root || !ownsKey(caller, a.ID) {
		return nil
	}
	if req.Enabled != nil && *req.Enabled && a.Disabled {
		return fmt.Errorf("%w: %s may not re-enable its own access key %s; ask an administrator", auth.ErrForbidden, caller.Name(), a.ID)
	}
	if req.Policies == nil {
		return nil
	}
	held := st.effectivePolicies(caller)
	for _, n := range *req.Policies {
		if !slices.Contains(held, n) && !slices.Contains(a.Policies, n) {
			return fmt.Errorf("%w: %s may not attach policy %q to its own access key %s: it does not hold that policy (no principal may grant itself rights)", auth.ErrForbidden, caller.Name(), n, a.ID)
		}
	}
	return nil
}
