package client

import "time"

// Policy is a stored access policy: a YAML document of statements (see
// docs/policy.md), attached to roles, access keys and tokens by name.
type Policy struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Document    string    `json:"document"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
	// AttachedTo lists the roles (role/NAME), access keys and tokens that
	// use the policy; filled by GET /v1/policies/{name}.
	AttachedTo []string `json:"attached_to,omitempty"`
}

// PutPolicyRequest is the body of PUT /v1/policies/{name}.
type PutPolicyRequest struct {
	Description string `json:"description,omitempty"`
	// Document is the policy YAML. Errors name its line and column.
	Document string `json:"document"`
}

// PolicyList is the answer of GET /v1/policies.
type PolicyList struct {
	Policies []Policy `json:"policies"`
}

// Role is a set of policies that callers assume to get a temporary token:
// principals named in TrustPrincipals (with auth assume-role), Kubernetes
// service accounts matching Kubernetes (with auth kubernetes), or holders of
// a client certificate matching Certificates (with auth cert).
type Role struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Policies    []string `json:"policies"`
	// TTL is the default lifetime of the role's tokens (default 1h);
	// MaxTTL bounds a requested TTL and renewal (default TTL, at most 12h).
	TTL    string `json:"ttl,omitempty"`
	MaxTTL string `json:"max_ttl,omitempty"`
	// TrustPrincipals are patterns of principals that may assume the role:
	// access-key:ID, token:ACCESSOR, role:NAME (globs allowed, for example
	// access-key:* or role:ci-*).
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

// RoleList is the answer of GET /v1/roles.
type RoleList struct {
	Roles []Role `json:"roles"`
}

// AssumeRoleRequest is the body of POST /v1/auth/assume-role.
type AssumeRoleRequest struct {
	Role string `json:"role"`
	// TTL is a duration like 15m; empty means the role's TTL.
	TTL string `json:"ttl,omitempty"`
	// Policy is an optional scope-down policy (YAML): the token may do only
	// what both the role and this policy allow.
	Policy string `json:"policy,omitempty"`
	// BoundCIDRs bind the token to source networks (on top of the role's).
	BoundCIDRs  []string `json:"bound_cidrs,omitempty"`
	SessionName string   `json:"session_name,omitempty"`
}

// KubernetesLoginRequest is the body of POST /v1/auth/kubernetes/login.
type KubernetesLoginRequest struct {
	Role string `json:"role"`
	// JWT is the pod's projected service-account token.
	JWT string `json:"jwt"`
	// Cluster names the registered cluster; optional when the token's
	// issuer identifies it.
	Cluster string `json:"cluster,omitempty"`
	TTL     string `json:"ttl,omitempty"`
}

// CertLoginRequest is the body of POST /v1/auth/cert/login.
type CertLoginRequest struct {
	Role string `json:"role"`
	TTL  string `json:"ttl,omitempty"`
}

// RenewTokenRequest is the body of POST /v1/auth/token/renew and
// renew-self.
type RenewTokenRequest struct {
	Accessor string `json:"accessor,omitempty"` // renew only
	// Increment is the new lifetime from now (default: the role's TTL),
	// capped at the token's MaxExpiresAt.
	Increment string `json:"increment,omitempty"`
}

// RevokeRoleRequest is the body of POST /v1/auth/token/revoke-role.
type RevokeRoleRequest struct {
	Role string `json:"role"`
}

// RevokePrincipalRequest is the body of POST /v1/auth/token/revoke-principal.
type RevokePrincipalRequest struct {
	// Principal is a subject as TokenInfo.Subject names it, for example
	// access-key:cfak_..., kubernetes:prod/payments/api, token:acc_....
	Principal string `json:"principal"`
}

// RevokeCountResponse says how many tokens a bulk revocation removed.
type RevokeCountResponse struct {
	Revoked int `json:"revoked"`
}

// AccessKey describes an access key without its secret.
type AccessKey struct {
	ID          string     `json:"access_key_id"`
	Description string     `json:"description,omitempty"`
	Policies    []string   `json:"policies"`
	Enabled     bool       `json:"enabled"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	LastUsedAt  *time.Time `json:"last_used_at,omitempty"`
	LastSource  string     `json:"last_source,omitempty"`
}

// CreateAccessKeyRequest is the body of POST /v1/access-keys.
type CreateAccessKeyRequest struct {
	Description string   `json:"description,omitempty"`
	Policies    []string `json:"policies"`
	// ExpiresIn is a duration like 90d; empty means no expiry.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// CreateAccessKeyResponse carries the secret, shown once.
type CreateAccessKeyResponse struct {
	AccessKey
	SecretAccessKey string `json:"secret_access_key"`
}

// UpdateAccessKeyRequest is the body of PATCH /v1/access-keys/{id}; nil
// fields are left alone.
type UpdateAccessKeyRequest struct {
	Enabled     *bool     `json:"enabled,omitempty"`
	Description *string   `json:"description,omitempty"`
	Policies    *[]string `json:"policies,omitempty"`
}

// AccessKeyList is the answer of GET /v1/access-keys.
type AccessKeyList struct {
	AccessKeys []AccessKey `json:"access_keys"`
}

// Cluster is a Kubernetes cluster whose service-account tokens Coffer
// accepts. Mode jwks verifies tokens locally with the cluster's public keys;
// mode tokenreview asks the cluster's TokenReview API.
type Cluster struct {
	Name   string `json:"name"`
	Mode   string `json:"mode"` // jwks or tokenreview
	Issuer string `json:"issuer,omitempty"`
	// JWKS is the JSON Web Key Set (jwks mode).
	JWKS string `json:"jwks,omitempty"`
	// DiscoveryURL, when set on registration in jwks mode, is where the
	// server fetches the issuer and JWKS (OIDC discovery) instead of JWKS.
	DiscoveryURL string `json:"discovery_url,omitempty"`
	// APIServer and CACert (PEM) reach the cluster (tokenreview mode, and
	// discovery).
	APIServer string `json:"api_server,omitempty"`
	CACert    string `json:"ca_cert,omitempty"`
	// ReviewerToken authenticates the TokenReview calls (and discovery).
	// Write-only: never returned.
	ReviewerToken string    `json:"reviewer_token,omitempty"`
	CreatedAt     time.Time `json:"created_at,omitzero"`
}

// ClusterList is the answer of GET /v1/auth/kubernetes/clusters.
type ClusterList struct {
	Clusters []Cluster `json:"clusters"`
}

// KeyPolicy is the key policy of one key (GET and PUT
// /v1/keys/{key}/policy).
type KeyPolicy struct {
	KeyID string `json:"key_id,omitempty"`
	// Document is the policy YAML; empty means the key has no key policy.
	Document string `json:"document"`
}

// SimulateRequest is the body of POST /v1/policies/simulate: would
// Principal be allowed Action on Resource?
type SimulateRequest struct {
	// Principal is role:NAME, access-key:ID or token:ACCESSOR.
	Principal string            `json:"principal"`
	Action    string            `json:"action"`
	Resource  string            `json:"resource,omitempty"`
	Context   map[string]string `json:"context,omitempty"`
	SourceIP  string            `json:"source_ip,omitempty"`
	// Time is RFC 3339; empty means now.
	Time string `json:"time,omitempty"`
	// Namespace and ServiceAccount stand in for a Kubernetes caller of a
	// role.
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"service_account,omitempty"`
}

// SimulateResponse is the decision and the statement that made it.
type SimulateResponse struct {
	Allowed bool   `json:"allowed"`
	Reason  string `json:"reason"`
	// Decision is the one-line description, naming the statement
	// (POLICY:LINE statement N (SID)).
	Decision  string `json:"decision"`
	Statement string `json:"statement,omitempty"`
}
