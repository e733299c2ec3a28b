package server

import (
	"context"
	"crypto/x509"
	"net/http"
	"slices"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/iam"
	"github.com/cofferkms/coffer/internal/keys"
)

// iamRoutes serve roles, access keys, policies, clusters and the logins
// that turn them into tokens.
func (s *Server) iamRoutes() {
	m, im := s.mux, s.sys.IAM
	pathName := func(prefix string) func(*http.Request, *empty) string {
		return func(r *http.Request, _ *empty) string { return prefix + r.PathValue("name") }
	}

	// policies
	m.HandleFunc("PUT /v1/policies/{name}", handle(s, route{action: "policy:Write"},
		func(r *http.Request, _ *client.PutPolicyRequest) string { return "policy/" + r.PathValue("name") },
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *client.PutPolicyRequest) (client.Policy, error) {
			return policyAnswer(im.PutPolicy(ctx, r.PathValue("name"), iam.PutPolicyRequest(*req)))
		}))
	m.HandleFunc("GET /v1/policies", handle(s, route{action: "policy:List"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.PolicyList, error) {
			return wirePolicyList(im.ListPolicies(ctx)), nil
		}))
	m.HandleFunc("GET /v1/policies/{name}", handle(s, route{action: "policy:Read"}, pathName("policy/"),
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.Policy, error) {
			return policyAnswer(im.GetPolicy(ctx, r.PathValue("name")))
		}))
	m.HandleFunc("DELETE /v1/policies/{name}", handle(s, route{action: "policy:Delete"}, pathName("policy/"),
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (noContent, error) {
			return noContent{}, im.DeletePolicy(ctx, r.PathValue("name"))
		}))
	m.HandleFunc("POST /v1/policies/simulate", handle(s, route{action: "policy:Simulate"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.SimulateRequest) (client.SimulateResponse, error) {
			return simulateAnswer(im.Simulate(ctx, iam.SimulateRequest(*req)))
		}))

	// key policies
	m.HandleFunc("GET /v1/keys/{key}/policy", handle(s, route{action: "key:GetKeyPolicy"}, pathKey,
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.KeyPolicy, error) {
			k, err := s.sys.Keys.Describe(ctx, r.PathValue("key"))
			if err != nil {
				return client.KeyPolicy{}, err
			}
			return client.KeyPolicy(im.KeyPolicy(k.ID)), nil
		}))
	m.HandleFunc("PUT /v1/keys/{key}/policy", handle(s, route{action: "key:PutKeyPolicy"},
		func(r *http.Request, _ *client.KeyPolicy) string { return r.PathValue("key") },
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *client.KeyPolicy) (client.KeyPolicy, error) {
			k, err := s.sys.Keys.Describe(ctx, r.PathValue("key"))
			if err != nil {
				return client.KeyPolicy{}, err
			}
			if req.KeyID != "" && req.KeyID != k.ID {
				return client.KeyPolicy{}, badRequest("key_id %q in the body is not the key of the path (%s)", req.KeyID, k.ID)
			}
			return keyPolicyAnswer(im.PutKeyPolicy(ctx, k.ID, req.Document))
		}))

	// roles
	m.HandleFunc("POST /v1/roles", handle(s, route{action: "role:Create", created: true},
		func(_ *http.Request, req *client.Role) string { return "role/" + req.Name },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.Role) (client.Role, error) {
			return roleAnswer(im.CreateRole(ctx, roleRequest(req)))
		}))
	m.HandleFunc("GET /v1/roles", handle(s, route{action: "role:List"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.RoleList, error) {
			return wireRoleList(im.ListRoles(ctx)), nil
		}))
	m.HandleFunc("GET /v1/roles/{name}", handle(s, route{action: "role:Read"}, pathName("role/"),
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.Role, error) {
			return roleAnswer(im.GetRole(ctx, r.PathValue("name")))
		}))
	m.HandleFunc("PUT /v1/roles/{name}", handle(s, route{action: "role:Update"},
		func(r *http.Request, _ *client.Role) string { return "role/" + r.PathValue("name") },
		func(ctx context.Context, r *http.Request, p auth.Principal, req *client.Role) (client.Role, error) {
			return roleAnswer(im.UpdateRoleBy(ctx, &p, r.PathValue("name"), roleRequest(req)))
		}))
	m.HandleFunc("DELETE /v1/roles/{name}", handle(s, route{action: "role:Delete"}, pathName("role/"),
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.RevokeCountResponse, error) {
			n, err := im.DeleteRole(ctx, r.PathValue("name"))
			return client.RevokeCountResponse{Revoked: n}, err
		}))

	// access keys
	m.HandleFunc("POST /v1/access-keys", handle(s, route{action: "accesskey:Create", created: true}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.CreateAccessKeyRequest) (client.CreateAccessKeyResponse, error) {
			return createdAccessKeyAnswer(im.CreateAccessKey(ctx, iam.CreateAccessKeyRequest(*req)))
		}))
	m.HandleFunc("GET /v1/access-keys", handle(s, route{action: "accesskey:List"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.AccessKeyList, error) {
			return wireAccessKeyList(im.ListAccessKeys(ctx)), nil
		}))
	m.HandleFunc("GET /v1/access-keys/{name}", handle(s, route{action: "accesskey:Read"}, pathName(""),
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.AccessKey, error) {
			return accessKeyAnswer(im.GetAccessKey(ctx, r.PathValue("name")))
		}))
	m.HandleFunc("PATCH /v1/access-keys/{name}", handle(s, route{action: "accesskey:Update"},
		func(r *http.Request, _ *client.UpdateAccessKeyRequest) string { return r.PathValue("name") },
		func(ctx context.Context, r *http.Request, p auth.Principal, req *client.UpdateAccessKeyRequest) (client.AccessKey, error) {
			return accessKeyAnswer(im.UpdateAccessKeyBy(ctx, &p, r.PathValue("name"), iam.UpdateAccessKeyRequest(*req)))
		}))
	m.HandleFunc("DELETE /v1/access-keys/{name}", handle(s, route{action: "accesskey:Delete"}, pathName(""),
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (noContent, error) {
			return noContent{}, im.DeleteAccessKey(ctx, r.PathValue("name"))
		}))

	// Kubernetes clusters
	m.HandleFunc("POST /v1/auth/kubernetes/clusters", handle(s, route{action: "cluster:Register", created: true},
		func(_ *http.Request, req *client.Cluster) string { return "cluster/" + req.Name },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.Cluster) (client.Cluster, error) {
			return clusterAnswer(im.RegisterCluster(ctx, iam.Cluster(*req)))
		}))
	m.HandleFunc("GET /v1/auth/kubernetes/clusters", handle(s, route{action: "cluster:List"}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, _ *empty) (client.ClusterList, error) {
			return wireClusterList(im.ListClusters(ctx)), nil
		}))
	m.HandleFunc("GET /v1/auth/kubernetes/clusters/{name}", handle(s, route{action: "cluster:Read"}, pathName("cluster/"),
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.Cluster, error) {
			return clusterAnswer(im.GetCluster(ctx, r.PathValue("name")))
		}))
	m.HandleFunc("DELETE /v1/auth/kubernetes/clusters/{name}", handle(s, route{action: "cluster:Delete"}, pathName("cluster/"),
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (noContent, error) {
			return noContent{}, im.DeleteCluster(ctx, r.PathValue("name"))
		}))

	// logins and temporary tokens
	m.HandleFunc("POST /v1/auth/assume-role", handle(s, route{action: "auth:AssumeRole"},
		func(_ *http.Request, req *client.AssumeRoleRequest) string { return "role/" + req.Role },
		func(ctx context.Context, _ *http.Request, p auth.Principal, req *client.AssumeRoleRequest) (client.CreateTokenResponse, error) {
			return issued(im.AssumeRole(ctx, &p, iam.AssumeRoleRequest(*req)))
		}))
	// Vault clients' logins at the default mount go to vault_auth.go.
	m.HandleFunc("POST /v1/auth/kubernetes/login", s.vaultOrCofferK8sLogin(handle(s, route{action: "auth:AssumeRole", public: true, login: true,
		loginKey: func(_ *http.Request, req any) string {
			return iam.KubernetesLoginClaim((*iam.KubernetesLoginRequest)(req.(*client.KubernetesLoginRequest)))
		}},
		func(_ *http.Request, req *client.KubernetesLoginRequest) string { return "role/" + req.Role },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.KubernetesLoginRequest) (client.CreateTokenResponse, error) {
			return issued(im.KubernetesLogin(ctx, iam.KubernetesLoginRequest(*req)))
		})))
	m.HandleFunc("POST /v1/auth/cert/login", handle(s, route{action: "auth:AssumeRole", public: true, login: true,
		loginKey: certLoginClaim},
		func(_ *http.Request, req *client.CertLoginRequest) string { return "role/" + req.Role },
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *client.CertLoginRequest) (client.CreateTokenResponse, error) {
			var cert = verifiedClientCert(r)
			return issued(im.CertLogin(ctx, cert, iam.CertLoginRequest(*req)))
		}))
	m.HandleFunc("POST /v1/auth/token/renew-self", handle(s, route{action: "token:RenewSelf"}, nil,
		func(ctx context.Context, _ *http.Request, p auth.Principal, req *client.RenewTokenRequest) (client.TokenInfo, error) {
			if p.Accessor == "" {
				return client.TokenInfo{}, badRequest("only tokens can be renewed; this request used an access key")
			}
			return s.renew(ctx, p.Accessor, req.Increment)
		}))
	m.HandleFunc("POST /v1/auth/token/renew", handle(s, route{action: "token:Renew"},
		func(_ *http.Request, req *client.RenewTokenRequest) string { return req.Accessor },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.RenewTokenRequest) (client.TokenInfo, error) {
			if req.Accessor == "" {
				return client.TokenInfo{}, badRequest("accessor is required (or use renew-self)")
			}
			return s.renew(ctx, req.Accessor, req.Increment)
		}))
	m.HandleFunc("POST /v1/auth/token/revoke-role", handle(s, route{action: "token:RevokeRole"},
		func(_ *http.Request, req *client.RevokeRoleRequest) string { return "role/" + req.Role },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.RevokeRoleRequest) (client.RevokeCountResponse, error) {
			if req.Role == "" {
				return client.RevokeCountResponse{}, badRequest("role is required")
			}
			n, err := im.RevokeRole(ctx, req.Role)
			return client.RevokeCountResponse{Revoked: n}, err
		}))
	m.HandleFunc("POST /v1/auth/token/revoke-principal", handle(s, route{action: "token:RevokePrincipal"},
		func(_ *http.Request, req *client.RevokePrincipalRequest) string { return req.Principal },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *client.RevokePrincipalRequest) (client.RevokeCountResponse, error) {
			n, err := im.RevokePrincipal(ctx, req.Principal)
			return client.RevokeCountResponse{Revoked: n}, err
		}))
}

// certLoginClaim names the principal a certificate login claims: the role
// and the verified certificate (by serial and issuer), for the failure
// budget of (source, principal).
func certLoginClaim(r *http.Request, req any) string {
	key := "cert\x00" + req.(*client.CertLoginRequest).Role
	if c := verifiedClientCert(r); c != nil {
		key += "\x00" + c.Issuer.String() + "\x00" + c.SerialNumber.Text(16)
	}
	return key
}

// issued answers a login with the new token.
func issued(tok string, p auth.Principal, err error) (client.CreateTokenResponse, error) {
	if err != nil {
		return client.CreateTokenResponse{}, err
	}
	return client.CreateTokenResponse{Token: tok, TokenInfo: tokenInfo(p)}, nil
}

func (s *Server) renew(ctx context.Context, accessor, increment string) (client.TokenInfo, error) {
	var d time.Duration
	if increment != "" {
		var err error
		if d, err = keys.ParsePeriod(increment); err != nil {
			return client.TokenInfo{}, badRequest("increment %q: want a duration like 30m or 1h", increment)
		}
	}
	p, err := s.sys.Tokens.Renew(ctx, accessor, d)
	if err != nil {
		return client.TokenInfo{}, err
	}
	return tokenInfo(p), nil
}

// checkTokenPolicies enforces that a token made by p carries only
// policies p itself has (any, for root; a role's, for a role token).
func (s *Server) checkTokenPolicies(p *auth.Principal, want []string) error {
	if p.Root || len(want) == 0 {
		return nil
	}
	// What p may use now: a role's or access key's current policies, a
	// token's own narrowed by the role or key it was made from.
	have := s.sys.IAM.EffectivePolicies(p)
	for _, w := range want {
		if !slices.Contains(have, w) {
			return &apiError{http.StatusForbidden, "permission_denied", "a token may carry only policies its creator has; " + p.Name() + " does not have policy " + w}
		}
	}
	return nil
}

func tokenInfo(p auth.Principal) client.TokenInfo {
	ti := client.TokenInfo{Accessor: p.Accessor, DisplayName: p.DisplayName, Root: p.Root, Kind: p.Kind, Role: p.Role,
		Subject: p.Subject, Cluster: p.Cluster, Namespace: p.Namespace, ServiceAccount: p.ServiceAccount, Policies: p.Policies,
		Scoped: len(p.Scopes) > 0, CreatedAt: p.CreatedAt}
	for _, c := range p.CIDRs {
		ti.BoundCIDRs = append(ti.BoundCIDRs, c.String())
	}
	if !p.ExpiresAt.IsZero() {
		e := p.ExpiresAt
		ti.ExpiresAt = &e
	}
	if !p.MaxExpiresAt.IsZero() {
		e := p.MaxExpiresAt
		ti.MaxExpiresAt = &e
	}
	return ti
}

// verifiedClientCert is the client certificate the TLS handshake verified
// against the client CA (tls_client_ca_file), or nil.
func verifiedClientCert(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}
