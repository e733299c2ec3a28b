package iam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/policy"
	"github.com/cofferkms/coffer/internal/storage"
)

// Cache coherence with other replicas. A policy, role, access key,
// cluster, key policy or revocation mark changed on another replica
// reaches this one as a watch event (internal/sys, a storage.Change).
// Refresh reads that path again and publishes a new snapshot with the
// entry replaced or dropped, every role's and access key's policy set
// recompiled, and the compiled token policy sets (state.tokenSets, which
// live in the snapshot) left behind with the old one. It reads the current
// stored value rather than applying the change's: the snapshot keeps no
// revision per entry, so an event older than a local write could not be
// told apart from a newer one, and configuration changes are rare enough
// for one store read each. Reading makes it idempotent.

// Refresh re-reads the path of one change under iam/ and brings the
// snapshot in line with it. Other paths are ignored. A revocation mark
// (iam/revoked/NAME) also revokes the tokens of that principal cached
// here and made before the mark: a token another replica issued while the
// revocation was being made, which the revoking replica did not know.
func (s *Service) Refresh(ctx context.Context, c storage.Change) error {
	return s.Reread(ctx, c.Path)
}

// Reread brings the snapshot in line with what is stored at path now
// (Refresh, and a retry of a failed one).
func (s *Service) Reread(ctx context.Context, path string) error {
	kind := refreshKind(path)
	if kind == "" {
		return nil
	}
	e, err := s.store.Get(ctx, path)
	found := err == nil
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("refreshing %s: %w", path, err)
	}
	var revokedAt time.Time
	err = s.change(func(st *state) error {
		if !found {
			return dropEntry(st, kind, path)
		}
		if err := s.applyEntry(st, kind, path, e.Value); err != nil {
			return fmt.Errorf("refreshing %s: %w", path, err)
		}
		if kind == revokedPath {
			name, _ := url.PathUnescape(strings.TrimPrefix(path, revokedPath))
			revokedAt = st.revoked[name]
		}
		return nil
	})
	if err != nil || revokedAt.IsZero() {
		return err
	}
	name, _ := url.PathUnescape(strings.TrimPrefix(path, revokedPath))
	_, err = s.tokens.RevokeWhere(ctx, func(p *auth.Principal) bool {
		return (p.Subject == name || p.Name() == name) && !p.CreatedAt.After(revokedAt)
	})
	return err
}

// Resync reads the whole configuration again and publishes it at once,
// holding off local changes meanwhile: after a watch lost history
// (storage.EventReset).
func (s *Service) Resync(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := newState()
	for _, prefix := range []string{policyPath, rolePath, accessKeyPath, clusterPath, keyPolicyPath, revokedPath} {
		if err := s.loadEach(ctx, prefix, func(path string, v []byte) error {
			return s.applyEntry(n, prefix, path, v)
		}); err != nil {
			return err
		}
	}
	n.relink()
	s.state.Store(n)
	return nil
}

// refreshKind returns the storage prefix of an iam path, or "".
func refreshKind(path string) string {
	for _, p := range []string{policyPath, rolePath, accessKeyPath, clusterPath, keyPolicyPath, revokedPath} {
		if strings.HasPrefix(path, p) && len(path) > len(p) {
			return p
		}
	}
	return ""
}

// applyEntry decodes a stored entry as Load does and puts it into st.
func (s *Service) applyEntry(st *state, kind, path string, v []byte) error {
	switch kind {
	case policyPath:
		var p Policy
		if err := json.Unmarshal(v, &p); err != nil {
			return err
		}
		parsed, err := policy.Parse(p.Name, []byte(p.Document))
		if err != nil {
			return err
		}
		st.policies[p.Name] = &storedPolicy{Policy: p, parsed: parsed}
		st.relink()
	case rolePath:
		var r Role
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		e, err := compileRole(r)
		if err != nil {
			return err
		}
		e.set = st.setOf(r.Policies)
		st.roles[r.Name] = e
	case accessKeyPath:
		var a accessKeyRecord
		if err := json.Unmarshal(v, &a); err != nil || len(a.Hash) != 32 {
			return errors.New("malformed access key record")
		}
		st.accessKeys[a.ID] = &accessKeyEntry{accessKeyRecord: a, set: st.setOf(a.Policies)}
	case clusterPath:
		var c Cluster
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
		e, err := compileCluster(c, s.now)
		if err != nil {
			return err
		}
		st.clusters[c.Name] = e
	case keyPolicyPath:
		id := strings.TrimPrefix(path, keyPolicyPath)
		p, err := policy.Parse("key-policy/"+id, v)
		if err != nil {
			return err
		}
		st.keyPolicies[id] = &keyPolicyEntry{doc: string(v), set: policy.NewSet(p)}
	case revokedPath:
		name, err := url.PathUnescape(strings.TrimPrefix(path, revokedPath))
		if err != nil {
			return err
		}
		var t time.Time
		if err := t.UnmarshalText(v); err != nil {
			return err
		}
		st.revoked[name] = t
	}
	return nil
}

// dropEntry removes the entry of a deleted path from st.
func dropEntry(st *state, kind, path string) error {
	name := strings.TrimPrefix(path, kind)
	switch kind {
	case policyPath:
		if _, ok := st.policies[name]; ok {
			delete(st.policies, name)
			st.relink()
		}
	case rolePath:
		delete(st.roles, name)
	case accessKeyPath:
		delete(st.accessKeys, name)
	case clusterPath:
		delete(st.clusters, name)
	case keyPolicyPath:
		delete(st.keyPolicies, name)
	case revokedPath:
		n, err := url.PathUnescape(name)
		if err != nil {
			return err
		}
		delete(st.revoked, n)
	}
	return nil
}
