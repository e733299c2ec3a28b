package client

import (
	"context"
	"net/http"
	"net/url"
)

// PutPolicy creates or replaces a stored policy (PUT /v1/policies/{name}).
func (c *Client) PutPolicy(ctx context.Context, name string, req PutPolicyRequest) (*Policy, error) {
	var out Policy
	return &out, c.do(ctx, http.MethodPut, "/v1/policies/"+url.PathEscape(name), nil, req, &out)
}

// GetPolicy returns a stored policy and what it is attached to.
func (c *Client) GetPolicy(ctx context.Context, name string) (*Policy, error) {
	var out Policy
	return &out, c.do(ctx, http.MethodGet, "/v1/policies/"+url.PathEscape(name), nil, nil, &out)
}

// ListPolicies returns every stored policy.
func (c *Client) ListPolicies(ctx context.Context) ([]Policy, error) {
	var out PolicyList
	return out.Policies, c.do(ctx, http.MethodGet, "/v1/policies", nil, nil, &out)
}

// DeletePolicy deletes a policy that nothing carries.
func (c *Client) DeletePolicy(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/policies/"+url.PathEscape(name), nil, nil, nil)
}

// Simulate asks whether a principal would be allowed an action (POST
// /v1/policies/simulate); nothing is performed.
func (c *Client) Simulate(ctx context.Context, req SimulateRequest) (*SimulateResponse, error) {
	var out SimulateResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/policies/simulate", nil, req, &out)
}

// GetKeyPolicy returns a key's key policy (empty Document: none).
func (c *Client) GetKeyPolicy(ctx context.Context, key string) (*KeyPolicy, error) {
	var out KeyPolicy
	return &out, c.do(ctx, http.MethodGet, "/v1/keys/"+url.PathEscape(key)+"/policy", nil, nil, &out)
}

// PutKeyPolicy sets a key's key policy; an empty document removes it.
func (c *Client) PutKeyPolicy(ctx context.Context, key, document string) (*KeyPolicy, error) {
	var out KeyPolicy
	return &out, c.do(ctx, http.MethodPut, "/v1/keys/"+url.PathEscape(key)+"/policy", nil, KeyPolicy{Document: document}, &out)
}

// CreateRole creates a role (POST /v1/roles).
func (c *Client) CreateRole(ctx context.Context, r Role) (*Role, error) {
	var out Role
	return &out, c.do(ctx, http.MethodPost, "/v1/roles", nil, r, &out)
}

// UpdateRole replaces a role (PUT /v1/roles/{name}).
func (c *Client) UpdateRole(ctx context.Context, r Role) (*Role, error) {
	var out Role
	return &out, c.do(ctx, http.MethodPut, "/v1/roles/"+url.PathEscape(r.Name), nil, r, &out)
}

// GetRole returns a role.
func (c *Client) GetRole(ctx context.Context, name string) (*Role, error) {
	var out Role
	return &out, c.do(ctx, http.MethodGet, "/v1/roles/"+url.PathEscape(name), nil, nil, &out)
}

// ListRoles returns every role.
func (c *Client) ListRoles(ctx context.Context) ([]Role, error) {
	var out RoleList
	return out.Roles, c.do(ctx, http.MethodGet, "/v1/roles", nil, nil, &out)
}

// DeleteRole deletes a role and revokes its tokens; it returns how many.
func (c *Client) DeleteRole(ctx context.Context, name string) (int, error) {
	var out RevokeCountResponse
	return out.Revoked, c.do(ctx, http.MethodDelete, "/v1/roles/"+url.PathEscape(name), nil, nil, &out)
}

// CreateAccessKey makes an access key; the secret is in the answer only.
func (c *Client) CreateAccessKey(ctx context.Context, req CreateAccessKeyRequest) (*CreateAccessKeyResponse, error) {
	var out CreateAccessKeyResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/access-keys", nil, req, &out)
}

// GetAccessKey describes an access key.
func (c *Client) GetAccessKey(ctx context.Context, id string) (*AccessKey, error) {
	var out AccessKey
	return &out, c.do(ctx, http.MethodGet, "/v1/access-keys/"+url.PathEscape(id), nil, nil, &out)
}

// ListAccessKeys describes every access key.
func (c *Client) ListAccessKeys(ctx context.Context) ([]AccessKey, error) {
	var out AccessKeyList
	return out.AccessKeys, c.do(ctx, http.MethodGet, "/v1/access-keys", nil, nil, &out)
}

// UpdateAccessKey enables, disables or changes an access key.
func (c *Client) UpdateAccessKey(ctx context.Context, id string, req UpdateAccessKeyRequest) (*AccessKey, error) {
	var out AccessKey
	return &out, c.do(ctx, http.MethodPatch, "/v1/access-keys/"+url.PathEscape(id), nil, req, &out)
}

// DeleteAccessKey deletes an access key.
func (c *Client) DeleteAccessKey(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/access-keys/"+url.PathEscape(id), nil, nil, nil)
}

// RegisterCluster registers (or replaces) a Kubernetes cluster.
func (c *Client) RegisterCluster(ctx context.Context, cl Cluster) (*Cluster, error) {
	var out Cluster
	return &out, c.do(ctx, http.MethodPost, "/v1/auth/kubernetes/clusters", nil, cl, &out)
}

// ListClusters describes the registered clusters.
func (c *Client) ListClusters(ctx context.Context) ([]Cluster, error) {
	var out ClusterList
	return out.Clusters, c.do(ctx, http.MethodGet, "/v1/auth/kubernetes/clusters", nil, nil, &out)
}

// GetCluster describes one cluster.
func (c *Client) GetCluster(ctx context.Context, name string) (*Cluster, error) {
	var out Cluster
	return &out, c.do(ctx, http.MethodGet, "/v1/auth/kubernetes/clusters/"+url.PathEscape(name), nil, nil, &out)
}

// DeleteCluster forgets a cluster.
func (c *Client) DeleteCluster(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/auth/kubernetes/clusters/"+url.PathEscape(name), nil, nil, nil)
}

// AssumeRole exchanges the Client's credential for a temporary token of a
// role. The Client keeps using its own credential; pass the answer's Token
// to WithToken or SetToken to act in the role.
func (c *Client) AssumeRole(ctx context.Context, req AssumeRoleRequest) (*CreateTokenResponse, error) {
	var out CreateTokenResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/auth/assume-role", nil, req, &out)
}

// KubernetesLogin exchanges a service-account token for a temporary token
// of a role. It needs no credential.
func (c *Client) KubernetesLogin(ctx context.Context, req KubernetesLoginRequest) (*CreateTokenResponse, error) {
	var out CreateTokenResponse
	return &out, c.doAnonymous(ctx, http.MethodPost, "/v1/auth/kubernetes/login", req, &out)
}

// CertLogin exchanges the Client's TLS client certificate for a temporary
// token of a role.
func (c *Client) CertLogin(ctx context.Context, req CertLoginRequest) (*CreateTokenResponse, error) {
	var out CreateTokenResponse
	return &out, c.doAnonymous(ctx, http.MethodPost, "/v1/auth/cert/login", req, &out)
}

// RenewSelf extends the Client's role token (increment "" means the role's
// TTL), up to its maximum lifetime.
func (c *Client) RenewSelf(ctx context.Context, increment string) (*TokenInfo, error) {
	var out TokenInfo
	return &out, c.do(ctx, http.MethodPost, "/v1/auth/token/renew-self", nil, RenewTokenRequest{Increment: increment}, &out)
}

// RenewToken extends a role token named by its accessor.
func (c *Client) RenewToken(ctx context.Context, accessor, increment string) (*TokenInfo, error) {
	var out TokenInfo
	return &out, c.do(ctx, http.MethodPost, "/v1/auth/token/renew", nil, RenewTokenRequest{Accessor: accessor, Increment: increment}, &out)
}

// RevokeRoleTokens revokes every token of a role and returns how many.
func (c *Client) RevokeRoleTokens(ctx context.Context, role string) (int, error) {
	var out RevokeCountResponse
	return out.Revoked, c.do(ctx, http.MethodPost, "/v1/auth/token/revoke-role", nil, RevokeRoleRequest{Role: role}, &out)
}

// RevokePrincipal revokes every token a principal holds or obtained, and
// refuses its Kubernetes tokens issued before now.
func (c *Client) RevokePrincipal(ctx context.Context, principal string) (int, error) {
	var out RevokeCountResponse
	return out.Revoked, c.do(ctx, http.MethodPost, "/v1/auth/token/revoke-principal", nil, RevokePrincipalRequest{Principal: principal}, &out)
}
