package iam

import (
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/policy"
)

// PreAuthorize answers, before a request's body is read, whether p could be
// allowed action on any resource at all. It returns a *Denied (an
// auth.ErrForbidden) when no identity policy of p, or no scope-down policy
// it carries, has an allow statement for action: Authorize would then deny
// every request for action whatever its resource and context, since a key
// policy can narrow an identity's rights but never grant them. nil means
// only "maybe": the request is authorized in full once its resource is
// known.
//
// The server calls it so that a caller without rights cannot make it read
// and decode a large body (issue 13, item 6).
func (s *Service) PreAuthorize(p *auth.Principal, action string) error {
	if p.Root || selfService[action] {
		return nil
	}
	if _, ok := policy.LookupAction(action); !ok {
		return nil // Authorize names the unknown action
	}
	st := s.state.Load()
	d := policy.Decision{Reason: "no statement allows it on any resource (default deny)"}
	ok := st.identitySet(p).MayAllow(action)
	for i := 0; ok && i < len(p.Scopes); i++ {
		if !p.Scopes[i].MayAllow(action) {
			ok = false
			d.Reason = "the token's scope-down policy does not allow it"
		}
	}
	if ok {
		return nil
	}
	return &Denied{Principal: p.Name(), Action: action, Decision: d}
}
