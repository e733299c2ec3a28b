package iam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/cofferkms/coffer/internal/policy"
	"github.com/cofferkms/coffer/internal/storage"
)

// PutPolicy creates or replaces a stored policy. The document is parsed
// and validated first; its errors name the line. Roles, access keys and
// tokens that carry the policy see the new version from their next request.
//
// A put replaces the whole document, so the last writer wins, as with
// PUT in Vault or AWS IAM; the creation time kept is the stored
// policy's, written with compare-and-swap so a policy created on another
// replica meanwhile keeps its own (writeStored).
func (s *Service) PutPolicy(ctx context.Context, name string, req PutPolicyRequest) (Policy, error) {
	if err := checkName("policy", name); err != nil {
		return Policy{}, err
	}
	if len(req.Description) > maxDescLen {
		return Policy{}, fmt.Errorf("%w: description is longer than %d bytes", ErrInvalidArgument, maxDescLen)
	}
	parsed, err := policy.Parse(name, []byte(req.Document))
	if err != nil {
		return Policy{}, policyError(err)
	}
	var out Policy
	err = s.change(func(st *state) error {
		var p Policy
		if err := s.writeStored(ctx, policyPath+name, "policy "+name, func(cur []byte) ([]byte, error) {
			now := s.now().UTC()
			p = Policy{Name: name, Description: req.Description, Document: req.Document, CreatedAt: now, UpdatedAt: now}
			var old Policy
			if cur != nil && json.Unmarshal(cur, &old) == nil && !old.CreatedAt.IsZero() {
				p.CreatedAt = old.CreatedAt
			}
			return json.Marshal(p)
		}); err != nil {
			return err
		}
		st.policies[name] = &storedPolicy{Policy: p, parsed: parsed}
		st.relink()
		out = p
		return nil
	})
	return out, err
}

// GetPolicy returns a stored policy and what it is attached to.
func (s *Service) GetPolicy(_ context.Context, name string) (Policy, error) {
	st := s.state.Load()
	p := st.policies[name]
	if p == nil {
		return Policy{}, fmt.Errorf("%w: policy %q does not exist", ErrNotFound, name)
	}
	out := p.Policy
	out.AttachedTo = s.attachments(st, name)
	return out, nil
}

// ListPolicies returns every stored policy (documents included), by name.
func (s *Service) ListPolicies(_ context.Context) []Policy {
	st := s.state.Load()
	out := make([]Policy, 0, len(st.policies))
	for _, p := range st.policies {
		out = append(out, p.Policy)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// attachments names what carries policy name: role/NAME, access-key/ID and
// token/ACCESSOR.
func (s *Service) attachments(st *state, name string) []string {
	var out []string
	for _, r := range st.roles {
		if slices.Contains(r.Policies, name) {
			out = append(out, "role/"+r.Name)
		}
	}
	for _, a := range st.accessKeys {
		if slices.Contains(a.Policies, name) {
			out = append(out, "access-key/"+a.ID)
		}
	}
	for _, acc := range s.tokens.PolicyUsers()[name] {
		out = append(out, "token/"+acc)
	}
	slices.Sort(out)
	return out
}

// DeletePolicy deletes a policy that nothing carries any more.
//
// Whether the policy exists is the store's say: the stored policy, as it
// is when deleted (compare-and-swap on the revision read), is the one
// deleted, even one this replica has not heard of yet. Whether something
// carries it is decided on this replica's view, which may lag another
// replica's attachment by up to the freshness bound; a role or key left
// naming a deleted policy gets nothing from the name (setOf).
func (s *Service) DeletePolicy(ctx context.Context, name string) error {
	// No token is issued meanwhile, so none can name the policy after it
	// was found unattached (a later policy of the same name would then
	// grant it more than it was given).
	return s.tokens.Exclusive(func() error { return s.deletePolicy(ctx, name) })
}

func (s *Service) deletePolicy(ctx context.Context, name string) error {
	return s.change(func(st *state) error {
		if at := s.attachments(st, name); len(at) > 0 {
			if len(at) > 5 {
				at = append(at[:5], fmt.Sprintf("and %d more", len(at)-5))
			}
			return fmt.Errorf("%w: policy %q is attached to %v; detach it first", ErrInUse, name, at)
		}
		if err := s.writeStored(ctx, policyPath+name, "policy "+name, func(cur []byte) ([]byte, error) {
			if cur == nil {
				return nil, fmt.Errorf("%w: policy %q does not exist", ErrNotFound, name)
			}
			return nil, nil
		}); err != nil {
			return err
		}
		if _, ok := st.policies[name]; ok {
			delete(st.policies, name)
			st.relink()
		}
		return nil
	})
}

// TokenPoliciesExist is an auth.Spec.Valid check for a token that carries
// names: each must still be a stored policy.
func (s *Service) TokenPoliciesExist(names []string) func() error {
	return func() error {
		st := s.state.Load()
		for _, n := range names {
			if st.policies[n] == nil {
				return fmt.Errorf("%w: policy %q does not exist; create it with `coffer policy put %s FILE`", ErrInvalidArgument, n, n)
			}
		}
		return nil
	}
}

// checkPolicyNames reports too many or a repeated policy name.
func checkPolicyNames(names []string) error {
	if len(names) > maxPolicies {
		return fmt.Errorf("%w: %d policies; at most %d may be attached", ErrInvalidArgument, len(names), maxPolicies)
	}
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("%w: policy %q is listed twice", ErrInvalidArgument, n)
		}
	}
	return nil
}

// policyConds reports the first of names that is not a stored policy, and
// returns, for a write that attaches them, a condition on each one's
// stored revision: a policy deleted on another replica, which this
// replica's cache may still hold, is refused, and so is one deleted
// between this read and the write (writeStoredWith).
func (s *Service) policyConds(ctx context.Context, names []string) ([]storage.Op, error) {
	ops := make([]storage.Op, 0, len(names))
	for _, n := range names {
		e, err := s.store.Get(ctx, policyPath+n)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("%w: policy %q does not exist; create it with `coffer policy put %s FILE`", ErrInvalidArgument, n, n)
		}
		if err != nil {
			return nil, err
		}
		ops = append(ops, storage.Op{Kind: storage.OpCheck, Key: policyPath + n, IfRevision: e.Revision})
	}
	return ops, nil
}

// PutKeyPolicy sets the key policy of the key with id keyID (resolved by
// the caller). An empty document removes it. The document replaces the
// stored one whole and nothing is kept from it, so the last writer wins
// (no compare-and-swap needed).
func (s *Service) PutKeyPolicy(ctx context.Context, keyID, doc string) (KeyPolicy, error) {
	if doc == "" {
		err := s.change(func(st *state) error {
			if err := s.store.Apply(ctx, storage.Delete(keyPolicyPath+keyID)); err != nil {
				return err
			}
			delete(st.keyPolicies, keyID)
			return nil
		})
		return KeyPolicy{KeyID: keyID}, err
	}
	parsed, err := policy.Parse("key-policy/"+keyID, []byte(doc))
	if err != nil {
		return KeyPolicy{}, policyError(err)
	}
	err = s.change(func(st *state) error {
		if err := s.store.Apply(ctx, storage.Put(keyPolicyPath+keyID, []byte(doc))); err != nil {
			return err
		}
		st.keyPolicies[keyID] = &keyPolicyEntry{doc: doc, set: policy.NewSet(parsed)}
		return nil
	})
	return KeyPolicy{KeyID: keyID, Document: doc}, err
}

// KeyPolicy returns the key policy of a key id ("" when it has none).
func (s *Service) KeyPolicy(keyID string) KeyPolicy {
	out := KeyPolicy{KeyID: keyID}
	if e := s.state.Load().keyPolicies[keyID]; e != nil {
		out.Document = e.doc
	}
	return out
}
