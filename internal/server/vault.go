package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
)

// The Vault-compatible door (docs/vault-compat.md): transit under one
// mount, KV version 2 over the secrets manager under another, and the few
// auth/ and sys/ paths the stock clients call. Every route is a route of
// handle, like the REST ones: the same authentication (a Vault token is a
// Coffer token, sent as X-Vault-Token), the same actions and resources
// for authorization, the same audit (door "vault"), body limits and
// metrics. This file holds what is the door's own: the mounts, the token
// header, the answer and error shapes.

// doorVault is the audit door of the Vault-compatible API.
const doorVault = "vault"

// vaultTokenHeader carries a Vault client's token.
const vaultTokenHeader = "X-Vault-Token"

// Default mounts.
const (
	DefaultVaultTransitMount = "transit"
	DefaultVaultKVMount      = "secret"
)

// VaultMounts are the mount paths of the Vault-compatible API: transit at
// /v1/<Transit>/, KV version 2 at /v1/<KV>/ and the Kubernetes auth
// method at /v1/auth/<Kubernetes>/. Empty fields take the defaults
// (transit, secret, kubernetes).
type VaultMounts struct {
	Transit    string `json:"transit_mount"`
	KV         string `json:"kv_mount"`
	Kubernetes string `json:"kubernetes_mount"`
	// KubernetesCluster, when set, is the registered cluster every login
	// at the Kubernetes mount is verified by (a Vault mount serves one
	// cluster); empty: the cluster whose issuer the token names.
	KubernetesCluster string `json:"kubernetes_cluster"`
}

func (m VaultMounts) withDefaults() VaultMounts {
	if m.Transit == "" {
		m.Transit = DefaultVaultTransitMount
	}
	if m.KV == "" {
		m.KV = DefaultVaultKVMount
	}
	if m.Kubernetes == "" {
		m.Kubernetes = DefaultVaultKubernetesMount
	}
	return m
}

// cofferNamespaces are the first path segments under /v1/ of Coffer's own
// API, and Vault's sys and auth: a mount may be none of them (a test
// checks that every route of the package is under one of them).
var cofferNamespaces = map[string]bool{
	"sys": true, "auth": true, "keys": true, "kms": true, "aliases": true, "secrets": true, "policies": true,
	"roles": true, "access-keys": true, "clusters": true, "iam": true, "tokens": true, "audit": true, "identity": true, "metrics": true,
}

// checkMount reports whether m is a usable mount path: segments of
// A-Z a-z 0-9 . _ - separated by single slashes, outside Coffer's own
// namespaces.
func checkMount(what, m string) error {
	if len(m) > 64 {
		return fmt.Errorf("vault %s %q: at most 64 characters", what, m)
	}
	for seg := range strings.SplitSeq(m, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("vault %s %q: want path segments like transit or kv/prod, without empty, . or .. segments", what, m)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("vault %s %q: %q is not allowed; use A-Z a-z 0-9 . _ -", what, m, c)
			}
		}
	}
	first, _, _ := strings.Cut(m, "/")
	if cofferNamespaces[first] {
		return fmt.Errorf("vault %s %q collides with Coffer's own /v1/%s/ routes; choose another mount", what, m, first)
	}
	return nil
}

// checkClusterName refuses a kubernetes_cluster no cluster can be
// registered under (names are 1..64 of A-Z a-z 0-9 . _ -, starting with a
// letter or digit): a stray space or quote in the config would otherwise
// fail every Vault login as an untrusted one. Empty is allowed (no
// cluster named).
func checkClusterName(c string) error {
	if c == "" {
		return nil
	}
	ok := len(c) <= 64 && c[0] != '.' && c[0] != '_' && c[0] != '-'
	for i := 0; ok && i < len(c); i++ {
		b := c[i]
		ok = b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-'
	}
	if !ok {
		return fmt.Errorf("vault kubernetes_cluster %q is no cluster name: want 1..64 of A-Z a-z 0-9 . _ -, starting with a letter or digit, as registered", c)
	}
	return nil
}

// checkMounts validates both mounts and that neither holds the other.
func (m VaultMounts) check() error {
	if err := checkMount("transit_mount", m.Transit); err != nil {
		return err
	}
	if err := checkMount("kv_mount", m.KV); err != nil {
		return err
	}
	if err := checkMount("kubernetes_mount", m.Kubernetes); err != nil {
		return err
	}
	if err := checkClusterName(m.KubernetesCluster); err != nil {
		return err
	}
	if m.Transit == m.KV || strings.HasPrefix(m.Transit+"/", m.KV+"/") || strings.HasPrefix(m.KV+"/", m.Transit+"/") {
		return fmt.Errorf("vault transit_mount %q and kv_mount %q overlap; give each its own path", m.Transit, m.KV)
	}
	return nil
}

// probeMount asks the mux, holding Coffer's own routes, whether any of
// them takes a path under the mount: the namespace list above is the
// first line, this the second.
func (s *Server) probeMount(m string) error {
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, "LIST"} {
		for _, sub := range []string{"", "/", "/x", "/keys/x", "/keys/x/rotate", "/encrypt/x", "/decrypt/x", "/random", "/datakey/plaintext/x",
			"/data/x", "/metadata/x", "/delete/x", "/destroy/x", "/undelete/x"} {
			p := "/v1/" + m + sub
			r, err := http.NewRequest(method, p, nil)
			if err != nil {
				return err
			}
			if _, pattern := s.mux.Handler(r); pattern != "" {
				return fmt.Errorf("vault mount %q collides with Coffer's route %q; choose another mount", m, pattern)
			}
		}
	}
	return nil
}

// vaultRoutes registers the Vault-compatible API under the configured
// mounts, after Coffer's own routes (which the mounts must not touch).
func (s *Server) vaultRoutes(m VaultMounts) error {
	m = m.withDefaults()
	if err := m.check(); err != nil {
		return err
	}
	for _, mount := range []string{m.Transit, m.KV} {
		if err := s.probeMount(mount); err != nil {
			return err
		}
	}
	if err := s.vaultAuthRoutes(m.Kubernetes); err != nil {
		return err
	}
	s.vault = m
	s.vaultTransitRoutes(m.Transit)
	s.vaultKVRoutes(m.KV)
	s.mux.HandleFunc("GET /v1/sys/internal/ui/mounts/{path...}", vaultHandler(handle(s, route{action: "token:LookupSelf", door: doorVault}, nil,
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (vaultSecret, error) {
			if rec := recordOf(ctx); rec != nil {
				rec.Detail = "vault mounts"
			}
			return s.vaultMountInfo(r.PathValue("path"))
		})))
	return nil
}

// vaultMountInfo answers the mount check of the stock clients (which path
// is KV version 2, which transit).
func (s *Server) vaultMountInfo(p string) (vaultSecret, error) {
	p = strings.Trim(p, "/")
	for _, mt := range []struct{ path, typ string }{{s.vault.KV, "kv"}, {s.vault.Transit, "transit"}} {
		if p != mt.path && !strings.HasPrefix(p, mt.path+"/") {
			continue
		}
		data := map[string]any{"path": mt.path + "/", "type": mt.typ, "description": "", "local": false, "seal_wrap": false,
			"external_entropy_access": false, "options": nil}
		if mt.typ == "kv" {
			data["options"] = map[string]string{"version": "2"}
		}
		return vaultSecret{Data: data}, nil
	}
	return vaultSecret{}, vaultNotFound("no mount at " + boundString(p, 256))
}

// vaultAsks reports whether a request no route took is a Vault client's:
// under a Vault mount, or carrying a Vault token.
func (s *Server) vaultAsks(r *http.Request) bool {
	if r.Header.Get(vaultTokenHeader) != "" {
		return true
	}
	for _, m := range []string{s.vault.Transit, s.vault.KV} {
		if m != "" && (r.URL.Path == "/v1/"+m || strings.HasPrefix(r.URL.Path, "/v1/"+m+"/")) {
			return true
		}
	}
	return false
}

// vaultHandler presents a Vault client's token (X-Vault-Token) to the
// authenticator as Coffer's own token header; an Authorization header
// (Bearer) is taken as it is, as Coffer takes it.
func vaultHandler(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := r.Header.Get(vaultTokenHeader); tok != "" {
			r.Header.Set("X-Coffer-Token", tok)
		}
		h(w, r)
	}
}

// vaultSecret is Vault's answer envelope; only data is ever set.
type vaultSecret struct {
	RequestID     string    `json:"request_id"`
	LeaseID       string    `json:"lease_id"`
	Renewable     bool      `json:"renewable"`
	LeaseDuration int       `json:"lease_duration"`
	Data          any       `json:"data"`
	WrapInfo      *struct{} `json:"wrap_info"`
	Warnings      []string  `json:"warnings"`
	Auth          *struct{} `json:"auth"`
}

// vaultErrorBody is Vault's error shape.
type vaultErrorBody struct {
	Errors []string `json:"errors"`
}

func vaultErrors(msg string) vaultErrorBody { return vaultErrorBody{Errors: []string{msg}} }

// vaultStatus is the status Vault gives where Coffer's differs: a missing
// or bad token is 403 (permission denied), a check-and-set or state
// conflict 400, a deleted or destroyed secret 404.
func vaultStatus(status int) int {
	switch status {
	case http.StatusUnauthorized:
		return http.StatusForbidden
	case http.StatusConflict:
		return http.StatusBadRequest
	case http.StatusGone:
		return http.StatusNotFound
	}
	return status
}

func vaultNotFound(msg string) error { return &apiError{http.StatusNotFound, "not_found", msg} }

// vaultLookupSelf answers auth/token/lookup-self in Vault's shape: the
// REST door's route hands a request carrying X-Vault-Token here.
func (s *Server) vaultLookupSelf() http.HandlerFunc {
	return vaultHandler(handle(s, route{action: "token:LookupSelf", door: doorVault}, nil,
		func(_ context.Context, _ *http.Request, p auth.Principal, _ *empty) (vaultSecret, error) {
			ti := tokenInfo(p)
			policies := ti.Policies
			if ti.Root {
				policies = append([]string{"root"}, policies...)
			}
			if policies == nil {
				policies = []string{}
			}
			data := map[string]any{"accessor": ti.Accessor, "display_name": ti.DisplayName, "policies": policies, "type": "service",
				"renewable": false, "orphan": false, "path": "auth/token/create", "num_uses": 0, "ttl": 0, "creation_ttl": 0,
				"explicit_max_ttl": 0, "expire_time": nil, "entity_id": "", "meta": nil, "id": ""}
			now := time.Now()
			if !ti.CreatedAt.IsZero() {
				data["creation_time"] = ti.CreatedAt.Unix()
			}
			if ti.ExpiresAt != nil {
				data["expire_time"] = ti.ExpiresAt.UTC().Format(time.RFC3339Nano)
				data["ttl"] = max(int64(ti.ExpiresAt.Sub(now)/time.Second), 0)
				if !ti.CreatedAt.IsZero() {
					data["creation_ttl"] = int64(ti.ExpiresAt.Sub(ti.CreatedAt) / time.Second)
				}
			}
			if ti.MaxExpiresAt != nil && !ti.CreatedAt.IsZero() {
				data["explicit_max_ttl"] = int64(ti.MaxExpiresAt.Sub(ti.CreatedAt) / time.Second)
			}
			return vaultSecret{Data: data}, nil
		}))
}

// orVault serves a path Coffer and Vault share (auth/token/lookup-self):
// a request with a Vault token goes to vault, any other to coffer.
func orVault(vault, coffer http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(vaultTokenHeader) != "" {
			vault(w, r)
			return
		}
		coffer(w, r)
	}
}
