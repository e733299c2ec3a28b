package keys

import "errors"

// Errors of the key service. Each is wrapped with a message that names the
// key or the problem; callers classify with errors.Is, and the REST front
// door maps each to one status code in one place.
var (
	ErrInvalidArgument   = errors.New("invalid argument")
	ErrNotFound          = errors.New("key not found")
	ErrAliasExists       = errors.New("alias already exists")
	ErrAliasNotFound     = errors.New("alias not found")
	ErrDisabled          = errors.New("key is disabled")
	ErrPendingDeletion   = errors.New("key is pending deletion")
	ErrDeleted           = errors.New("key was deleted")
	ErrInvalidState      = errors.New("key is not in a state that allows this")
	ErrInvalidCiphertext = errors.New("invalid ciphertext")
	ErrTooLarge          = errors.New("plaintext too large")
)
