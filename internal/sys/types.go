package sys

import "time"

// This file holds what the seal and quorum operations answer, in the
// service's own terms. The REST door (internal/server) converts them to the
// public wire types of the client package.

// SealStatus is the seal state of this replica and its store.
type SealStatus struct {
	Initialized bool
	// Sealed is true until the barrier is unsealed and the services are
	// loaded.
	Sealed    bool
	Threshold int
	Shares    int
	// Progress is how many distinct shares have been submitted toward the
	// current unseal attempt.
	Progress int
	// Version is this server's version.
	Version string
	// Type is what protects the root key (barrier.TypeShamir or an
	// auto-unseal's type); empty before initialization.
	Type string
	// RecoveryShares and RecoveryThreshold describe the recovery shares
	// of an auto-unseal.
	RecoveryShares    int
	RecoveryThreshold int
	// ConfiguredType is the seal this server is configured with; it
	// differs from Type while a migration is pending (MigrationPending).
	ConfiguredType   string
	MigrationPending bool
	// Seal is the configured auto-unseal's health, nil without one.
	Seal *SealHealth
}

// SealHealth is the state of the configured auto-unseal.
type SealHealth struct {
	Type string
	// Info describes the seal; it holds no secret.
	Info map[string]string
	// Healthy is the result of the last health check, at CheckedAt;
	// HealthError says why not.
	Healthy     bool
	HealthError string
	CheckedAt   time.Time
	// LastUnsealError is why the last auto-unseal attempt failed ("" after
	// a success); Retrying says whether the server tries again by itself.
	LastUnsealError string
	Retrying        bool
	Failures        int64
	// UnsealDuration is how long the last successful auto-unseal took,
	// and UnsealedAt when it ended.
	UnsealDuration time.Duration
	UnsealedAt     time.Time
	// SealedByOperator is set after an operator's seal: the server stays
	// sealed until a restart or a quorum of recovery shares.
	SealedByOperator bool
}

// InitResult carries what Init creates, shown exactly once.
type InitResult struct {
	// Shares are the unseal shares (Shamir); empty under an auto-unseal.
	Shares    []string
	RootToken string
	// Type is the seal protecting the root key.
	Type string
	// RecoveryShares are the recovery shares of an auto-unseal.
	RecoveryShares []string
}

// GenerateRootStatus is the state of a generate-root attempt.
type GenerateRootStatus struct {
	Started  bool
	Nonce    string
	Progress int
	Required int
	// OTPLength is the length in bytes of the one-time pad to give.
	OTPLength int
	// OTPFingerprint identifies the attempt's pad (first 8 bytes of its
	// SHA-256, hex).
	OTPFingerprint string
	StartedAt      time.Time
	// Complete is set on the answer to the last share; EncodedToken is
	// then the new root token XORed with the pad, base64 (standard).
	Complete     bool
	EncodedToken string
}

// ShareKind names the shares a rekey replaces.
type ShareKind string

// Share kinds.
const (
	// ShareKindUnseal are the shares of a Shamir seal.
	ShareKindUnseal ShareKind = "unseal"
	// ShareKindRecovery are the shares of an auto-unseal.
	ShareKindRecovery ShareKind = "recovery"
)

// RekeyStatus is the state of a rekey attempt.
type RekeyStatus struct {
	Started bool
	Nonce   string
	// Kind is what is rekeyed.
	Kind         ShareKind
	Progress     int
	Required     int
	NewShares    int
	NewThreshold int
	// Complete is set on the answer to the last share; Shares then holds
	// the new shares, shown this once.
	Complete bool
	Shares   []string
}

// MigrateSealRequest submits one share toward a pending seal migration.
// Shares and Threshold are the counts of the new shares; zero keeps the
// current counts. Reset discards the shares submitted so far.
type MigrateSealRequest struct {
	Share     string
	Shares    int
	Threshold int
	Reset     bool
}

// MigrateSealResult is the state after a migrate-seal submission.
type MigrateSealResult struct {
	SealStatus
	// Complete is set when the migration was committed; Shares (to
	// Shamir) or RecoveryShares (from Shamir) are then new, shown once.
	Complete       bool
	Shares         []string
	RecoveryShares []string
}
