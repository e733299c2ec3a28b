package iam

import "time"

// This file holds the IAM service's own types. The REST door
// (internal/server) converts them to and from the public wire types of the
// client package.
//
// Policy, Role (with KubernetesTrust and CertificateTrust) and Cluster are
// also the records stored under iam/ (inside the barrier): their JSON tags
// are the stored format and must not change (record_test.go pins it). They
// happen to match the REST shapes today; the door converts all the same, so
// either can change without the other.

// Policy is a stored access policy: a YAML document of statements (see
// docs/policy.md), attached to roles, access keys and tokens by name.
type Policy struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Document    string    `json:"document"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
	// AttachedTo lists the roles (role/NAME), access keys and tokens that
	// use the policy; filled by GetPolicy only, never stored.
	AttachedTo []string `json:"attached_to,omitempty"`
}

// PutPolicyRequest creates or replaces a policy.
type PutPolicyRequest struct {
	Description string
	// Document is the policy YAML. Errors name its line and column.
	Document string
}

// Role is a set of policies that callers assume to get a temporary token:
// principals named in TrustPrincipals, Kubernetes service accounts
// matching Kubernetes, or holders of a client certificate matching
// Certificates.
type Role struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Policies    []string `json:"policies"`
	// TTL is the default lifetime of the role's tokens (default 1h);
	// MaxTTL bounds a requested TTL and renewal (default TTL, at most
	// 12h). Both are durations as the role was given them ("15m", "1d").
	TTL    string `json:"ttl,omitempty"`
	MaxTTL string `json:"max_ttl,omitempty"`
	// TrustPrincipals are patterns of principals that may assume the role
	// (access-key:ID, token:ACCESSOR, role:NAME; globs allowed).
	TrustPrincipals []string `json:"trust_principals,omitempty"`
	// Kubernetes are the service accounts that may assume the role.
	Kubernetes []KubernetesTrust `json:"kubernetes,omitempty"`
	// Certificates are the client certificates that may assume the role.
	Certificates []CertificateTrust `json:"certificates,omitempty"`
	// BoundCIDRs, when set, bind every token of the role to these source
	// networks.
	BoundCIDRs []string  `json:"bound_cidrs,omitempty"`
	CreatedAt  time.Time `json:"created_at,omitzero"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
}

// KubernetesTrust admits service accounts: each field is a glob.
type KubernetesTrust struct {
	Cluster        string `json:"cluster"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"service_account"`
	// Audience the projected token must be minted for (default "coffer").
	Audience string `json:"audience,omitempty"`
}

// CertificateTrust admits client certificates (verified against the
// server's client CA) whose common name or one of whose DNS names matches
// the glob.
type CertificateTrust struct {
	CommonName string `json:"common_name,omitempty"`
	DNSName    string `json:"dns_name,omitempty"`
}

// Cluster is a Kubernetes cluster whose service-account tokens Coffer
// accepts. Mode jwks verifies tokens locally with the cluster's public
// keys; mode tokenreview asks the cluster's TokenReview API.
type Cluster struct {
	Name   string `json:"name"`
	Mode   string `json:"mode"` // jwks or tokenreview
	Issuer string `json:"issuer,omitempty"`
	// JWKS is the JSON Web Key Set (jwks mode).
	JWKS string `json:"jwks,omitempty"`
	// DiscoveryURL, when set on registration in jwks mode, is where the
	// issuer and JWKS are fetched from (OIDC discovery) instead of JWKS.
	DiscoveryURL string `json:"discovery_url,omitempty"`
	// APIServer and CACert (PEM) reach the cluster (tokenreview mode, and
	// discovery).
	APIServer string `json:"api_server,omitempty"`
	CACert    string `json:"ca_cert,omitempty"`
	// ReviewerToken authenticates the TokenReview calls (and discovery).
	// It is stored, and never returned by GetCluster or ListClusters.
	ReviewerToken string    `json:"reviewer_token,omitempty"`
	CreatedAt     time.Time `json:"created_at,omitzero"`
}

// AssumeRoleRequest asks for a token of a role.
type AssumeRoleRequest struct {
	Role string
	// TTL is a duration like 15m; empty means the role's TTL.
	TTL string
	// Policy is an optional scope-down policy (YAML): the token may do
	// only what both the role and this policy allow.
	Policy string
	// BoundCIDRs bind the token to source networks (on top of the role's).
	BoundCIDRs  []string
	SessionName string
}

// KubernetesLoginRequest is a login with a pod's service-account token.
type KubernetesLoginRequest struct {
	Role string
	// JWT is the pod's projected service-account token.
	JWT string
	// Cluster names the registered cluster; optional when the token's
	// issuer identifies it.
	Cluster string
	TTL     string
}

// CertLoginRequest is a login with the verified client certificate of
// the connection.
type CertLoginRequest struct {
	Role string
	TTL  string
}

// AccessKey describes an access key without its secret.
type AccessKey struct {
	ID          string
	Description string
	Policies    []string
	Enabled     bool
	CreatedAt   time.Time
	// ExpiresAt and LastUsedAt are nil when the key does not expire or
	// was never used.
	ExpiresAt  *time.Time
	LastUsedAt *time.Time
	LastSource string
}

// CreateAccessKeyRequest describes a new access key.
type CreateAccessKeyRequest struct {
	Description string
	Policies    []string
	// ExpiresIn is a duration like 90d; empty means no expiry.
	ExpiresIn string
}

// CreatedAccessKey is a new access key with its secret, which exists only
// here.
type CreatedAccessKey struct {
	AccessKey
	SecretAccessKey string
}

// UpdateAccessKeyRequest changes an access key; nil fields are left
// alone.
type UpdateAccessKeyRequest struct {
	Enabled     *bool
	Description *string
	Policies    *[]string
}

// KeyPolicy is the key policy of one key.
type KeyPolicy struct {
	KeyID string
	// Document is the policy YAML; empty means the key has no key policy.
	Document string
}

// SimulateRequest asks whether Principal would be allowed Action on
// Resource.
type SimulateRequest struct {
	// Principal is role:NAME, access-key:ID or token:ACCESSOR.
	Principal string
	Action    string
	Resource  string
	Context   map[string]string
	SourceIP  string
	// Time is RFC 3339; empty means now.
	Time string
	// Namespace and ServiceAccount stand in for a Kubernetes caller of a
	// role.
	Namespace      string
	ServiceAccount string
}

// SimulateResult is the decision and the statement that made it.
type SimulateResult struct {
	Allowed bool
	Reason  string
	// Decision is the one-line description, naming the statement
	// (POLICY:LINE statement N (SID)).
	Decision  string
	Statement string
}
