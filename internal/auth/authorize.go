package auth

import "errors"

// ErrForbidden means the principal may not perform the action. The
// policy engine's denials (iam.Denied) wrap it.
var ErrForbidden = errors.New("permission denied")
