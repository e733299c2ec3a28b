package secrets

import (
	"errors"
	"fmt"
)

// Errors of the secrets service. Each is wrapped with a message naming the
// secret or the limit; the REST front door maps each to one status.
var (
	ErrInvalidArgument = errors.New("invalid argument")
	ErrTooLarge        = errors.New("secret version too large")
	ErrNotFound        = errors.New("secret not found")
	ErrVersionNotFound = errors.New("secret version not found")
	// ErrDeleted: the secret is soft-deleted (undelete it within its
	// recovery window).
	ErrDeleted = errors.New("secret is deleted")
	// ErrDestroyed: the version's data was destroyed (explicitly or
	// beyond max_versions); its metadata remains.
	ErrDestroyed = errors.New("secret version destroyed")
	// ErrWindowEnded: an undelete after the recovery window.
	ErrWindowEnded = errors.New("recovery window ended")
	// ErrNotDeleted: an undelete of a secret that is not deleted.
	ErrNotDeleted = errors.New("secret is not deleted")
	// ErrConflict: check-and-set failed; the error is a *ConflictError.
	ErrConflict = errors.New("check-and-set failed")
)

// ConflictError is a failed check-and-set: the secret's current version
// is Current (0: the secret does not exist).
type ConflictError struct {
	Name    string
	Want    uint32
	Current uint32
}

func (e *ConflictError) Error() string {
	if e.Current == 0 {
		return fmt.Sprintf("%s: secret %q does not exist (current version 0), not at version %d; write with cas 0 to create it", ErrConflict, e.Name, e.Want)
	}
	if e.Want == 0 {
		return fmt.Sprintf("%s: secret %q already exists at current version %d; cas 0 only creates", ErrConflict, e.Name, e.Current)
	}
	return fmt.Sprintf("%s: secret %q is at current version %d, not %d; read it again and retry with cas %d", ErrConflict, e.Name, e.Current, e.Want, e.Current)
}

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }
