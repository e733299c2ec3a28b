package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrForbidden means the principal may not perform the action.
var ErrForbidden = errors.New("permission denied")

// RootOnly is the authorizer of this release: the root token may do
// everything; other tokens may use and manage keys (actions "kms:*" and
// "key:*"), look up or revoke themselves and report leaked tokens, but not administer the server
// ("sys:*") or create tokens. The policy engine replaces it.
type RootOnly struct{}

// Authorize allows or denies action on resource for p.
func (RootOnly) Authorize(_ context.Context, p Principal, action, resource string) error {
	if p.Root {
		return nil
	}
	if strings.HasPrefix(action, "kms:") || strings.HasPrefix(action, "key:") ||
		action == "token:LookupSelf" || action == "token:RevokeSelf" || action == "token:ReportLeaked" {
		return nil
	}
	if resource == "" {
		return fmt.Errorf("%w: %s needs the root token", ErrForbidden, action)
	}
	return fmt.Errorf("%w: %s on %q needs the root token", ErrForbidden, action, resource)
}
