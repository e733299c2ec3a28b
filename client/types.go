package client

import "time"

// This file holds the JSON wire types of Coffer's REST API (/v1). The server
// decodes exactly these types, so a request and its documentation in
// docs/api.md never drift apart. Byte fields ([]byte) travel as standard
// base64 in JSON.

// Error is the body of every non-2xx response: {"error": {...}}.
type Error struct {
	// Code is a stable, machine-readable error class, for example
	// "invalid_request", "key_not_found", "key_disabled", "invalid_ciphertext".
	Code string `json:"code"`
	// Message says what went wrong and what to do about it.
	Message string `json:"message"`
	// RequestID correlates the error with server logs.
	RequestID string `json:"request_id,omitempty"`
	// CurrentVersion is, for a failed secret check-and-set (code
	// "cas_mismatch"), the secret's current version (0: it does not exist).
	CurrentVersion *uint32 `json:"current_version,omitempty"`
}

// Error implements the error interface, so a batch item's error can be
// returned as is.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrorBody wraps Error as the server sends it.
type ErrorBody struct {
	Error Error `json:"error"`
}

// SealStatus is the answer of GET /v1/sys/seal-status.
type SealStatus struct {
	Initialized bool `json:"initialized"`
	Sealed      bool `json:"sealed"`
	Threshold   int  `json:"threshold"`
	Shares      int  `json:"shares"`
	// Progress is how many distinct shares have been submitted toward the
	// current unseal attempt.
	Progress int    `json:"progress"`
	Version  string `json:"version"`
	// Type is what protects the root key: "shamir" (unseal shares) or an
	// auto-unseal ("pkcs11", "tpm2", "transit").
	Type string `json:"type,omitempty"`
	// RecoveryShares and RecoveryThreshold describe the recovery shares
	// of an auto-unseal, which authorise generate-root, rekey,
	// migrate-seal and an unseal after a manual seal.
	RecoveryShares    int `json:"recovery_shares,omitempty"`
	RecoveryThreshold int `json:"recovery_threshold,omitempty"`
	// ConfiguredType is the seal this server is configured with; it
	// differs from Type while a migration is pending (MigrationPending):
	// `coffer operator migrate-seal` then completes it.
	ConfiguredType   string `json:"configured_type,omitempty"`
	MigrationPending bool   `json:"migration_pending,omitempty"`
	// Seal reports the configured auto-unseal, when there is one.
	Seal *SealHealth `json:"seal,omitempty"`
}

// SealHealth is the state of a server's auto-unseal in its seal-status.
type SealHealth struct {
	Type string `json:"type"`
	// Info describes the seal (library, token and key label; TPM device
	// and PCRs; transit address and key); it holds no secret.
	Info map[string]string `json:"info,omitempty"`
	// Healthy is the result of the last health check (the device or
	// service answered and the key is usable), at CheckedAt; HealthError
	// says why not.
	Healthy     bool      `json:"healthy"`
	HealthError string    `json:"health_error,omitempty"`
	CheckedAt   time.Time `json:"checked_at,omitempty"`
	// LastUnsealError is why the last auto-unseal attempt failed ("" after
	// a success); Retrying says whether the server tries again by itself
	// (not after a manual seal, nor for a misconfiguration such as a wrong
	// PIN, which a real HSM punishes by locking the token).
	LastUnsealError string `json:"last_unseal_error,omitempty"`
	Retrying        bool   `json:"retrying"`
	Failures        int64  `json:"failures"`
	// UnsealSeconds is how long the last successful auto-unseal took.
	UnsealSeconds float64   `json:"unseal_seconds,omitempty"`
	UnsealedAt    time.Time `json:"unsealed_at,omitempty"`
	// SealedByOperator is set after `coffer operator seal`: the server
	// stays sealed until it restarts or a quorum of recovery shares is
	// submitted with `coffer operator unseal`.
	SealedByOperator bool `json:"sealed_by_operator,omitempty"`
}

// GenerateRootRequest starts a generate-root attempt (POST
// /v1/sys/generate-root/attempt) with a one-time pad: base64 (standard) of
// as many random bytes as a token has (GenerateRootStatus.OTPLength). The
// new root token is returned XORed with it, so it never travels in clear.
type GenerateRootRequest struct {
	OTP string `json:"otp"`
}

// GenerateRootStatus is the state of a generate-root attempt.
type GenerateRootStatus struct {
	Started  bool   `json:"started"`
	Nonce    string `json:"nonce,omitempty"`
	Progress int    `json:"progress"`
	Required int    `json:"required"`
	// OTPLength is the length in bytes of the one-time pad to give.
	OTPLength int `json:"otp_length"`
	// OTPFingerprint is the first 8 bytes of the SHA-256 of the attempt's
	// pad, in hex: whoever started the attempt sees it too and tells the
	// share holders, who check it before submitting, so that nobody
	// serves an attempt started by someone else with their own pad.
	OTPFingerprint string    `json:"otp_fingerprint,omitempty"`
	StartedAt      time.Time `json:"started_at,omitempty"`
	// Complete is set on the answer to the last share; EncodedToken is
	// then the new root token XORed with the pad, base64 (standard).
	Complete     bool   `json:"complete"`
	EncodedToken string `json:"encoded_token,omitempty"`
}

// ShareSubmission submits one unseal or recovery share to an attempt
// (generate-root, rekey) under its nonce.
type ShareSubmission struct {
	Nonce string `json:"nonce"`
	Share string `json:"share"`
}

// RekeyRequest starts a rekey attempt (POST /v1/sys/rekey/attempt): the
// new number of shares and threshold of the unseal shares (Shamir) or the
// recovery shares (auto-unseal).
type RekeyRequest struct {
	Shares    int `json:"shares"`
	Threshold int `json:"threshold"`
}

// RekeyStatus is the state of a rekey attempt.
type RekeyStatus struct {
	Started bool   `json:"started"`
	Nonce   string `json:"nonce,omitempty"`
	// Kind is what is rekeyed: "unseal" or "recovery" shares.
	Kind         string `json:"kind"`
	Progress     int    `json:"progress"`
	Required     int    `json:"required"`
	NewShares    int    `json:"new_shares,omitempty"`
	NewThreshold int    `json:"new_threshold,omitempty"`
	// Complete is set on the answer to the last share; Shares then holds
	// the new shares, shown this once. The old shares no longer work.
	Complete bool     `json:"complete"`
	Shares   []string `json:"shares,omitempty"`
}

// MigrateSealRequest submits one share toward a pending seal migration
// (POST /v1/sys/migrate-seal): a current unseal share, or a recovery share
// when the store is under an auto-unseal. Shares and Threshold are the
// counts of the new unseal shares (to Shamir) or recovery shares (from
// Shamir); zero keeps the current counts. Reset discards the shares
// submitted so far.
type MigrateSealRequest struct {
	Share     string `json:"share,omitempty"`
	Shares    int    `json:"shares,omitempty"`
	Threshold int    `json:"threshold,omitempty"`
	Reset     bool   `json:"reset,omitempty"`
}

// MigrateSealResponse is the answer to a migrate-seal submission.
type MigrateSealResponse struct {
	SealStatus
	// Complete is set when the migration was committed; the server is then
	// unsealed under its new seal. Shares (migration to Shamir) or
	// RecoveryShares (from Shamir to an auto-unseal) are new, shown once.
	Complete       bool     `json:"complete"`
	Shares         []string `json:"new_shares,omitempty"`
	RecoveryShares []string `json:"new_recovery_shares,omitempty"`
}

// Member is one replica in the answer of GET /v1/sys/members: what it
// publishes in the store (its record holds no secret) and whether it holds
// the job leadership (background rotation, deletion, sweeps).
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Version string `json:"version"`
	Sealed  bool   `json:"sealed"`
	// Started is when the replica's process started.
	Started time.Time `json:"started"`
	// LastHeartbeat is when the replica last renewed its record.
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Leader        bool      `json:"leader"`
}

// MemberList is the answer of GET /v1/sys/members, by id.
type MemberList struct {
	Members []Member `json:"members"`
}

// InitRequest is the body of POST /v1/sys/init.
type InitRequest struct {
	Shares    int `json:"shares"`
	Threshold int `json:"threshold"`
}

// InitResponse carries the unseal shares and the root token. They are shown
// exactly once.
type InitResponse struct {
	Shares    []string `json:"shares"`
	RootToken string   `json:"root_token"`
	// Type is the seal protecting the root key. Under an auto-unseal,
	// Shares is empty and RecoveryShares holds the recovery shares (the
	// request's shares and threshold are their counts).
	Type           string   `json:"type,omitempty"`
	RecoveryShares []string `json:"recovery_shares,omitempty"`
}

// UnsealRequest is the body of POST /v1/sys/unseal. Reset discards the shares
// submitted so far.
type UnsealRequest struct {
	Share string `json:"share,omitempty"`
	Reset bool   `json:"reset,omitempty"`
}

// KeyState is the lifecycle state of a key.
type KeyState string

// Key states.
const (
	KeyEnabled         KeyState = "Enabled"
	KeyDisabled        KeyState = "Disabled"
	KeyPendingDeletion KeyState = "PendingDeletion"
	KeyDeleted         KeyState = "Deleted"
)

// CreateKeyRequest is the body of POST /v1/keys.
type CreateKeyRequest struct {
	Alias       string `json:"alias,omitempty"`
	Description string `json:"description,omitempty"`
	// RotationPeriod is a duration such as "90d", "12h" or "30m"; empty means
	// no automatic rotation.
	RotationPeriod string            `json:"rotation_period,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

// UpdateKeyRequest is the body of PATCH /v1/keys/{key}. Nil fields are left
// unchanged; an empty RotationPeriod turns automatic rotation off.
type UpdateKeyRequest struct {
	Description    *string            `json:"description,omitempty"`
	RotationPeriod *string            `json:"rotation_period,omitempty"`
	Tags           *map[string]string `json:"tags,omitempty"`
}

// KeyVersion describes one version of a key. Key material never leaves the
// server.
type KeyVersion struct {
	Version   uint32    `json:"version"`
	CreatedAt time.Time `json:"created_at"`
}

// Key is the metadata of a key encryption key.
type Key struct {
	ID             string            `json:"id"`
	Aliases        []string          `json:"aliases"`
	Description    string            `json:"description,omitempty"`
	State          KeyState          `json:"state"`
	CreatedAt      time.Time         `json:"created_at"`
	PrimaryVersion uint32            `json:"primary_version"`
	Versions       []KeyVersion      `json:"versions"`
	RotationPeriod string            `json:"rotation_period,omitempty"`
	LastRotatedAt  time.Time         `json:"last_rotated_at"`
	NextRotationAt *time.Time        `json:"next_rotation_at,omitempty"`
	DeletionDate   *time.Time        `json:"deletion_date,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

// KeyList is the answer of GET /v1/keys.
type KeyList struct {
	Keys []Key `json:"keys"`
}

// ScheduleDeletionRequest is the body of POST /v1/keys/{key}/schedule-deletion.
type ScheduleDeletionRequest struct {
	// PendingDays is the waiting period, 7..30; 0 means the default, 30.
	PendingDays int `json:"pending_days,omitempty"`
}

// Alias maps a name ("alias/NAME") to a key.
type Alias struct {
	Name  string `json:"name"`
	KeyID string `json:"key_id"`
}

// UpdateAliasRequest is the body of PUT /v1/aliases/{name}: the key the
// existing alias is moved to (a key id or alias/NAME).
type UpdateAliasRequest struct {
	KeyID string `json:"key_id"`
}

// AliasList is the answer of GET /v1/aliases.
type AliasList struct {
	Aliases []Alias `json:"aliases"`
}

// EncryptRequest is the body of POST /v1/kms/encrypt.
type EncryptRequest struct {
	// KeyID is a key id or an alias ("alias/NAME").
	KeyID     string            `json:"key_id"`
	Plaintext []byte            `json:"plaintext"`
	Context   map[string]string `json:"context,omitempty"`
}

// EncryptResponse carries the self-describing ciphertext.
type EncryptResponse struct {
	Ciphertext []byte `json:"ciphertext"`
	KeyID      string `json:"key_id"`
	KeyVersion uint32 `json:"key_version"`
}

// DecryptRequest is the body of POST /v1/kms/decrypt. The ciphertext names
// its key; KeyID, when set, must match it.
type DecryptRequest struct {
	Ciphertext []byte            `json:"ciphertext"`
	Context    map[string]string `json:"context,omitempty"`
	KeyID      string            `json:"key_id,omitempty"`
}

// DecryptResponse carries the plaintext and the key that opened it.
type DecryptResponse struct {
	Plaintext  []byte `json:"plaintext"`
	KeyID      string `json:"key_id"`
	KeyVersion uint32 `json:"key_version"`
}

// ReEncryptRequest is the body of POST /v1/kms/reencrypt. An empty
// DestinationKeyID re-encrypts under the source key's primary version; a nil
// DestinationContext keeps the source context.
type ReEncryptRequest struct {
	Ciphertext         []byte            `json:"ciphertext"`
	SourceContext      map[string]string `json:"source_context,omitempty"`
	DestinationKeyID   string            `json:"destination_key_id,omitempty"`
	DestinationContext map[string]string `json:"destination_context,omitempty"`
}

// ReEncryptResponse carries the new ciphertext.
type ReEncryptResponse struct {
	Ciphertext       []byte `json:"ciphertext"`
	SourceKeyID      string `json:"source_key_id"`
	SourceKeyVersion uint32 `json:"source_key_version"`
	KeyID            string `json:"key_id"`
	KeyVersion       uint32 `json:"key_version"`
}

// DataKeyRequest is the body of POST /v1/kms/datakey and
// /v1/kms/datakey-without-plaintext.
type DataKeyRequest struct {
	KeyID string `json:"key_id"`
	// Bytes is the data key length, 1..1024; 0 means 32 (AES-256).
	Bytes   int               `json:"bytes,omitempty"`
	Context map[string]string `json:"context,omitempty"`
}

// DataKeyResponse carries a fresh data key and its wrapped copy. Plaintext is
// empty for datakey-without-plaintext.
type DataKeyResponse struct {
	Plaintext  []byte `json:"plaintext,omitempty"`
	Ciphertext []byte `json:"ciphertext"`
	KeyID      string `json:"key_id"`
	KeyVersion uint32 `json:"key_version"`
}

// RandomRequest is the body of POST /v1/kms/random.
type RandomRequest struct {
	// Bytes is 1..1024.
	Bytes int `json:"bytes"`
}

// RandomResponse carries random bytes from the server's CSPRNG.
type RandomResponse struct {
	Random []byte `json:"random"`
}

// BatchEncryptRequest is the body of POST /v1/kms/encrypt-batch. Items without
// a KeyID use the request's KeyID.
type BatchEncryptRequest struct {
	KeyID string           `json:"key_id,omitempty"`
	Items []EncryptRequest `json:"items"`
}

// BatchDecryptRequest is the body of POST /v1/kms/decrypt-batch.
type BatchDecryptRequest struct {
	Items []DecryptRequest `json:"items"`
}

// BatchEncryptResult is one item of a batch encrypt answer: either Error or
// the other fields are set. Results keep the order of the request's items.
type BatchEncryptResult struct {
	EncryptResponse
	Error *Error `json:"error,omitempty"`
}

// BatchDecryptResult is one item of a batch decrypt answer.
type BatchDecryptResult struct {
	DecryptResponse
	Error *Error `json:"error,omitempty"`
}

// BatchEncryptResponse keeps the order of the request's items.
type BatchEncryptResponse struct {
	Results []BatchEncryptResult `json:"results"`
}

// BatchDecryptResponse keeps the order of the request's items.
type BatchDecryptResponse struct {
	Results []BatchDecryptResult `json:"results"`
}

// CreateTokenRequest is the body of POST /v1/auth/token/create.
type CreateTokenRequest struct {
	// TTL is a duration such as "1h" or "30m"; empty means 24h.
	TTL         string `json:"ttl,omitempty"`
	DisplayName string `json:"display_name,omitempty"`
	// Policies are stored policies the token carries. They must be a
	// subset of the caller's own (any, for the root token).
	Policies []string `json:"policies,omitempty"`
}

// TokenInfo describes a token without revealing it.
type TokenInfo struct {
	Accessor    string `json:"accessor"`
	DisplayName string `json:"display_name,omitempty"`
	Root        bool   `json:"root"`
	// Kind is root, token (made by token create), role (a temporary token
	// of a role) or access-key (a request signed with an access key).
	Kind string `json:"kind,omitempty"`
	// Role is the role a temporary token acts in.
	Role string `json:"role,omitempty"`
	// Subject is who obtained a role token: access-key:ID, token:ACCESSOR,
	// role:NAME, kubernetes:CLUSTER/NAMESPACE/SERVICEACCOUNT or cert:NAME.
	Subject        string   `json:"subject,omitempty"`
	Cluster        string   `json:"cluster,omitempty"`
	Namespace      string   `json:"namespace,omitempty"`
	ServiceAccount string   `json:"service_account,omitempty"`
	Policies       []string `json:"policies,omitempty"`
	// BoundCIDRs limit where the token may be used from.
	BoundCIDRs []string   `json:"bound_cidrs,omitempty"`
	Scoped     bool       `json:"scoped,omitempty"` // carries a scope-down policy
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	// MaxExpiresAt is how far renewal can extend the token.
	MaxExpiresAt *time.Time `json:"max_expires_at,omitempty"`
}

// CreateTokenResponse carries the new token; it is shown once.
type CreateTokenResponse struct {
	Token string `json:"token"`
	TokenInfo
}

// ReportLeakedRequest is the body of POST /v1/auth/token/report-leaked:
// hex SHA-256 fingerprints of Coffer tokens found where they should not be
// (coffer scan --report-to). Never the tokens themselves.
type ReportLeakedRequest struct {
	Fingerprints []string `json:"fingerprints"`
}

// ReportLeakedResponse says what a leak report did.
type ReportLeakedResponse struct {
	// Revoked are the accessors of the tokens revoked by this report.
	Revoked        []string `json:"revoked"`
	AlreadyRevoked int      `json:"already_revoked"`
	Unknown        int      `json:"unknown"`
}

// LookupTokenRequest names the token POST /v1/auth/token/lookup describes.
type LookupTokenRequest struct {
	Accessor string `json:"accessor"`
}

// TokenList is the answer of GET /v1/auth/token/list: the tokens that have
// not expired, oldest first, without their values.
type TokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

// RevokeTokenRequest is the body of POST /v1/auth/token/revoke: either the
// token itself or its accessor.
type RevokeTokenRequest struct {
	Token    string `json:"token,omitempty"`
	Accessor string `json:"accessor,omitempty"`
}
