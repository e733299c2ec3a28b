package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/iam"
)

// Vault's Kubernetes auth method (docs/vault-compat.md): POST
// /v1/auth/<mount>/login with {role, jwt}, the login the stock clients'
// Kubernetes helpers make. It is Coffer's Kubernetes login
// (iam.KubernetesLogin) with the same route settings as the REST one
// (action auth:AssumeRole on role/NAME, public, the login failure budget
// per source and claim), audited under door "vault" and answered in
// Vault's shape.

// DefaultVaultKubernetesMount is the default mount of the Kubernetes auth
// method: /v1/auth/kubernetes/login.
const DefaultVaultKubernetesMount = "kubernetes"

// vaultRequestHeader is sent by the stock Vault clients on every request
// (github.com/hashicorp/vault/api sets it when a client is made).
const vaultRequestHeader = "X-Vault-Request"

// vaultK8sLoginRequest is the body of a Vault Kubernetes login.
type vaultK8sLoginRequest struct {
	Role string `json:"role"`
	JWT  string `json:"jwt"`
}

// vaultAuthSecret is Vault's answer to a login: the envelope with auth
// set.
type vaultAuthSecret struct {
	RequestID     string     `json:"request_id"`
	LeaseID       string     `json:"lease_id"`
	Renewable     bool       `json:"renewable"`
	LeaseDuration int        `json:"lease_duration"`
	Data          any        `json:"data"`
	WrapInfo      *struct{}  `json:"wrap_info"`
	Warnings      []string   `json:"warnings"`
	Auth          *vaultAuth `json:"auth"`
}

// vaultAuth is the auth block of a Vault login answer.
type vaultAuth struct {
	ClientToken   string            `json:"client_token"`
	Accessor      string            `json:"accessor"`
	Policies      []string          `json:"policies"`
	TokenPolicies []string          `json:"token_policies"`
	Metadata      map[string]string `json:"metadata"`
	LeaseDuration int64             `json:"lease_duration"`
	// Renewable is false: Coffer's renew-self is not Vault's, so a Vault
	// client must log in again instead (as lookup-self also says).
	Renewable bool   `json:"renewable"`
	EntityID  string `json:"entity_id"`
	TokenType string `json:"token_type"`
	Orphan    bool   `json:"orphan"`
}

// isVaultClient reports whether r comes from a Vault client: it carries
// Vault's request header or a Vault token.
func isVaultClient(r *http.Request) bool {
	return r.Header.Get(vaultRequestHeader) != "" || r.Header.Get(vaultTokenHeader) != ""
}

// vaultK8sLogin is the handler of the Vault Kubernetes login.
func (s *Server) vaultK8sLogin() http.HandlerFunc {
	im := s.sys.IAM
	return handle(s, route{action: "auth:AssumeRole", public: true, login: true, door: doorVault,
		loginKey: func(_ *http.Request, req any) string {
			q := req.(*vaultK8sLoginRequest)
			return iam.KubernetesLoginClaim(&iam.KubernetesLoginRequest{Role: q.Role, JWT: q.JWT, Cluster: s.vault.KubernetesCluster})
		}},
		func(_ *http.Request, req *vaultK8sLoginRequest) string { return "role/" + req.Role },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, req *vaultK8sLoginRequest) (vaultAuthSecret, error) {
			switch {
			case req.Role == "":
				return vaultAuthSecret{}, badRequest("missing role")
			case req.JWT == "":
				return vaultAuthSecret{}, badRequest("missing jwt")
			}
			tok, p, err := im.KubernetesLogin(ctx, iam.KubernetesLoginRequest{Role: req.Role, JWT: req.JWT, Cluster: s.vault.KubernetesCluster})
			if err != nil {
				return vaultAuthSecret{}, err
			}
			// A role's token takes the role's policies as they are at
			// each request; the answer names those of now.
			policies := p.Policies
			if r, err := im.GetRole(ctx, p.Role); err == nil && p.Role != "" {
				policies = r.Policies
			}
			return vaultLoginAnswer(tok, p, policies, time.Now()), nil
		})
}

// vaultLoginAnswer is the Vault answer for the token tok of p, which has
// policies.
func vaultLoginAnswer(tok string, p auth.Principal, policies []string, now time.Time) vaultAuthSecret {
	if policies == nil {
		policies = []string{}
	}
	a := &vaultAuth{ClientToken: tok, Accessor: p.Accessor, Policies: policies, TokenPolicies: policies, TokenType: "service",
		Metadata: map[string]string{"role": p.Role, "service_account_name": p.ServiceAccount,
			"service_account_namespace": p.Namespace, "service_account_uid": p.Attributes["service_account_uid"]}}
	if !p.ExpiresAt.IsZero() {
		a.LeaseDuration = max(int64(p.ExpiresAt.Sub(now)/time.Second), 0)
	}
	return vaultAuthSecret{Auth: a}
}

// vaultOrCofferK8sLogin serves POST /v1/auth/kubernetes/login, Coffer's
// Kubernetes login and Vault's at its default mount: the two take the
// same body. A Vault client's request (isVaultClient) gets Vault's login
// when the Kubernetes mount is the default; any other gets Coffer's.
func (s *Server) vaultOrCofferK8sLogin(coffer http.HandlerFunc) http.HandlerFunc {
	vault := s.vaultK8sLogin()
	return func(w http.ResponseWriter, r *http.Request) {
		if s.vault.Kubernetes == DefaultVaultKubernetesMount && isVaultClient(r) {
			vault(w, r)
			return
		}
		coffer(w, r)
	}
}

// vaultAuthRoutes registers the Kubernetes login at its mount, for POST
// and PUT (the stock client writes with PUT). At the default mount, POST
// is Coffer's own route, which hands Vault clients over
// (vaultOrCofferK8sLogin), and only PUT is added. The paths must be free.
func (s *Server) vaultAuthRoutes(mount string) error {
	p := "/v1/auth/" + mount + "/login"
	methods := []string{http.MethodPost, http.MethodPut}
	if mount == DefaultVaultKubernetesMount {
		methods = methods[1:]
	}
	for _, m := range methods {
		r, err := http.NewRequest(m, p, nil)
		if err != nil {
			return err
		}
		if _, pattern := s.mux.Handler(r); pattern != "" {
			return fmt.Errorf("vault kubernetes_mount %q collides with Coffer's route %q; choose another mount", mount, pattern)
		}
	}
	h := s.vaultK8sLogin()
	for _, m := range methods {
		s.mux.HandleFunc(m+" "+p, h)
	}
	return nil
}
