package keys

import "time"

// This file holds the key service's own types: what a key is to Coffer,
// whichever door (REST, or a compatible API) asked. The REST door
// (internal/server) converts them to and from the public wire types of the
// client package.

// State is the lifecycle state of a key. Its values are also what the
// stored record holds (docs/formats.md), so they never change.
type State string

// Key states.
const (
	// StateEnabled keys encrypt and decrypt.
	StateEnabled State = "Enabled"
	// StateDisabled keys refuse every cryptographic operation until enabled.
	StateDisabled State = "Disabled"
	// StatePendingDeletion keys are unusable and are destroyed at their
	// DeletionDate unless the deletion is cancelled.
	StatePendingDeletion State = "PendingDeletion"
	// StateDeleted keys have no key material left.
	StateDeleted State = "Deleted"
)

// Version describes one version of a key; its material never leaves the
// service.
type Version struct {
	Version   uint32
	CreatedAt time.Time
}

// Key is the metadata of a key encryption key.
type Key struct {
	ID string
	// Aliases are the alias/NAME names pointing at the key, sorted.
	Aliases        []string
	Description    string
	State          State
	CreatedAt      time.Time
	PrimaryVersion uint32
	Versions       []Version
	// RotationPeriod is the automatic rotation period; 0 means none.
	RotationPeriod time.Duration
	LastRotatedAt  time.Time
	// NextRotationAt is set when the key is enabled and rotates
	// automatically.
	NextRotationAt *time.Time
	// DeletionDate is set while the key is pending deletion, and after.
	DeletionDate *time.Time
	Tags         map[string]string
}

// CreateRequest describes a new key.
type CreateRequest struct {
	// Alias, when set, is an alias/NAME created with the key, atomically.
	Alias       string
	Description string
	// RotationPeriod is a period as ParsePeriod reads it ("90d", "12h");
	// empty means no automatic rotation.
	RotationPeriod string
	Tags           map[string]string
}

// UpdateRequest changes a key's metadata. Nil fields are left unchanged;
// an empty RotationPeriod turns automatic rotation off.
type UpdateRequest struct {
	Description    *string
	RotationPeriod *string
	Tags           *map[string]string
}

// Alias maps a name ("alias/NAME") to a key id.
type Alias struct {
	Name  string
	KeyID string
}
