package cli

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// This file holds how the CLI authenticates (resolveCredentials, used by
// newClient) and `coffer auth`: the logins that turn a credential into a
// temporary role token, renewal, bulk revocation and the registry of
// Kubernetes clusters whose service accounts may log in.

// credentials are the ways of authenticating that flags and environment
// give.
type credentials struct {
	token                        string // --token or COFFER_TOKEN
	accessKeyID, secretAccessKey string // COFFER_ACCESS_KEY_ID, COFFER_SECRET_ACCESS_KEY
	role                         string // COFFER_ROLE
	tokenFile, cluster           string // COFFER_TOKEN_FILE, COFFER_CLUSTER
	clientCert, clientKey        string // COFFER_CLIENT_CERT, COFFER_CLIENT_KEY
}

// resolveCredentials reads the credential settings: the token resolved
// from --token and COFFER_TOKEN, the rest from the environment.
func resolveCredentials(s settings) credentials {
	return credentials{
		token:           s.token,
		accessKeyID:     os.Getenv(client.EnvAccessKeyID),
		secretAccessKey: os.Getenv(client.EnvSecretAccessKey),
		role:            os.Getenv(client.EnvRole),
		tokenFile:       os.Getenv(client.EnvTokenFile),
		cluster:         os.Getenv(client.EnvCluster),
		clientCert:      os.Getenv(client.EnvClientCert),
		clientKey:       os.Getenv(client.EnvClientKey),
	}
}

// given reports whether any credential is set.
func (c credentials) given() bool {
	return c.token != "" || c.accessKeyID != "" || c.secretAccessKey != "" ||
		c.tokenFile != "" || c.clientCert != ""
}

// options turns the credentials into client options, in the order of
// precedence: a token, else an access key, else a Kubernetes login
// (COFFER_ROLE with COFFER_TOKEN_FILE). A client certificate is presented
// with any of them. COFFER_ROLE with a token, an access key or a client
// certificate makes the client assume that role and act in it.
func (c credentials) options() ([]client.Option, error) {
	var opts []client.Option
	role := c.role
	switch {
	case c.token != "":
		opts = append(opts, client.WithToken(c.token))
	case c.accessKeyID != "" || c.secretAccessKey != "":
		if c.accessKeyID == "" || c.secretAccessKey == "" {
			return nil, usageErrorf("%s and %s go together: set both", client.EnvAccessKeyID, client.EnvSecretAccessKey)
		}
		opts = append(opts, client.WithAccessKey(c.accessKeyID, c.secretAccessKey))
	case c.tokenFile != "":
		if role == "" {
			return nil, usageErrorf("%s needs %s: the role to log in as", client.EnvTokenFile, client.EnvRole)
		}
		opts = append(opts, client.WithKubernetesLogin(role, c.tokenFile, c.cluster))
		role = ""
	}
	if c.clientCert != "" || c.clientKey != "" {
		if c.clientCert == "" || c.clientKey == "" {
			return nil, usageErrorf("%s and %s go together: set both", client.EnvClientCert, client.EnvClientKey)
		}
		opts = append(opts, client.WithClientCertificate(c.clientCert, c.clientKey))
	}
	if role != "" {
		if len(opts) == 0 {
			return nil, usageErrorf("%s needs a credential to assume the role with: %s, %s and %s, %s, or %s and %s",
				client.EnvRole, client.EnvToken, client.EnvAccessKeyID, client.EnvSecretAccessKey, client.EnvTokenFile, client.EnvClientCert, client.EnvClientKey)
		}
		opts = append(opts, client.WithRole(role))
	}
	return opts, nil
}

// newAuthCmd builds `coffer auth`.
func newAuthCmd() *cobra.Command {
	cmd := groupCmd("auth", "Log in as a role, renew and revoke temporary tokens, register clusters")
	cmd.Long = `Turn a credential into a temporary token of a role, renew it, revoke
tokens in bulk, and manage the Kubernetes clusters whose service accounts
may log in.

A role names the policies its tokens carry and who may assume it: access
keys and tokens (assume-role), Kubernetes service accounts (kubernetes) and
client certificates (cert). See 'coffer role'.

Setting COFFER_ROLE makes every command assume the role by itself: with an
access key (COFFER_ACCESS_KEY_ID, COFFER_SECRET_ACCESS_KEY), a token, a
client certificate (COFFER_CLIENT_CERT, COFFER_CLIENT_KEY), or a Kubernetes
service-account token (COFFER_TOKEN_FILE, optionally COFFER_CLUSTER).`
	cmd.AddCommand(
		newAuthAssumeRoleCmd(),
		newAuthKubernetesCmd(),
		newAuthCertCmd(),
		newAuthRenewCmd(),
		newAuthRevokeCmd(),
		newAuthClusterCmd(),
	)
	return cmd
}

// newAuthAssumeRoleCmd builds `coffer auth assume-role`.
func newAuthAssumeRoleCmd() *cobra.Command {
	var (
		req        client.AssumeRoleRequest
		policyFile string
		export     bool
	)
	cmd := &cobra.Command{
		Use:   "assume-role ROLE",
		Short: "Get a temporary token of a role, with the credential in use",
		Long: `Exchange the credential in use (a token or an access key) for a temporary
token of ROLE. The role must trust the caller (its trust_principals), and
the caller's policies must allow auth:AssumeRole on role/ROLE.

--policy narrows the token with a scope-down policy: it may do only what
both the role and that policy allow. --cidr binds it to source networks
within the role's. --export prints a shell command instead, for eval.`,
		Example: `  coffer auth assume-role deploy --ttl 15m
  eval "$(coffer auth assume-role deploy --export)"
  coffer auth assume-role deploy --policy encrypt-only.yaml --cidr 10.0.0.0/8`,
		Args: exactArgs(1, "ROLE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Role = args[0]
			if err := checkPeriodFlag("ttl", req.TTL); err != nil {
				return err
			}
			if err := checkCIDRs("cidr", req.BoundCIDRs); err != nil {
				return err
			}
			if err := checkExport(cmd, export); err != nil {
				return err
			}
			if policyFile != "" {
				doc, err := readDocument(cmd, policyFile, "scope-down policy")
				if err != nil {
					return err
				}
				req.Policy = doc
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			resp, err := c.AssumeRole(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printIssuedToken(cmd, resp, export)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.TTL, "ttl", "", "lifetime of the token, like 15m (default the role's ttl)")
	f.StringVar(&policyFile, "policy", "", "scope-down policy `FILE` (YAML; - for stdin)")
	f.StringArrayVar(&req.BoundCIDRs, "cidr", nil, "bind the token to this source network (`CIDR`), like 10.0.0.0/8 (repeatable)")
	f.StringVar(&req.SessionName, "session-name", "", "name of the session, shown in audit logs and lookups")
	f.BoolVar(&export, "export", false, "print a shell command that sets COFFER_TOKEN, for eval")
	return cmd
}

// newAuthKubernetesCmd builds `coffer auth kubernetes`.
func newAuthKubernetesCmd() *cobra.Command {
	var (
		req       client.KubernetesLoginRequest
		tokenFile string
		export    bool
	)
	cmd := &cobra.Command{
		Use:   "kubernetes --role ROLE --token-file PATH",
		Short: "Log in as a role with a Kubernetes service-account token",
		Long: `Exchange a Kubernetes projected service-account token (the file the
kubelet mounts) for a temporary token of ROLE. The role must trust the
service account (its kubernetes entries), and the cluster must be
registered ('coffer auth cluster register'). --cluster names it; it may be
left out when the token's issuer identifies the cluster.

Inside a pod, setting COFFER_ROLE and COFFER_TOKEN_FILE instead makes every
command log in by itself, and log in again before the token expires.`,
		Example: `  coffer auth kubernetes --role payments \
    --token-file /var/run/secrets/tokens/coffer --cluster prod`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Role == "" || tokenFile == "" {
				return usageErrorf("--role and --token-file are required")
			}
			if err := checkPeriodFlag("ttl", req.TTL); err != nil {
				return err
			}
			if err := checkExport(cmd, export); err != nil {
				return err
			}
			jwt, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("reading the service-account token: %w", err)
			}
			if req.JWT = strings.TrimSpace(string(jwt)); req.JWT == "" {
				return fmt.Errorf("the service-account token file %s is empty", tokenFile)
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			resp, err := c.KubernetesLogin(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printIssuedToken(cmd, resp, export)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Role, "role", "", "role to log in as (required)")
	f.StringVar(&tokenFile, "token-file", "", "file of the projected service-account token (required)")
	f.StringVar(&req.Cluster, "cluster", "", "registered cluster the token comes from (default: found by its issuer)")
	f.StringVar(&req.TTL, "ttl", "", "lifetime of the token, like 15m (default the role's ttl)")
	f.BoolVar(&export, "export", false, "print a shell command that sets COFFER_TOKEN, for eval")
	return cmd
}

// newAuthCertCmd builds `coffer auth cert`.
func newAuthCertCmd() *cobra.Command {
	var (
		req               client.CertLoginRequest
		certFile, keyFile string
		export            bool
	)
	cmd := &cobra.Command{
		Use:   "cert --role ROLE",
		Short: "Log in as a role with a TLS client certificate",
		Long: `Present a TLS client certificate (verified against the server's client CA)
and get a temporary token of ROLE. The role must trust the certificate's
common name or one of its DNS names (its certificates entries).

The certificate and its key come from --client-cert and --client-key, or
COFFER_CLIENT_CERT and COFFER_CLIENT_KEY.`,
		Example: `  coffer auth cert --role backup --client-cert backup.crt --client-key backup.key`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Role == "" {
				return usageErrorf("--role is required")
			}
			if certFile == "" {
				certFile = os.Getenv(client.EnvClientCert)
			}
			if keyFile == "" {
				keyFile = os.Getenv(client.EnvClientKey)
			}
			if certFile == "" || keyFile == "" {
				return usageErrorf("a client certificate and its key are required: pass --client-cert and --client-key, or set %s and %s",
					client.EnvClientCert, client.EnvClientKey)
			}
			if err := checkPeriodFlag("ttl", req.TTL); err != nil {
				return err
			}
			if err := checkExport(cmd, export); err != nil {
				return err
			}
			c, err := newClient(cmd, client.WithClientCertificate(certFile, keyFile))
			if err != nil {
				return err
			}
			resp, err := c.CertLogin(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printIssuedToken(cmd, resp, export)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Role, "role", "", "role to log in as (required)")
	f.StringVar(&certFile, "client-cert", "", "PEM file of the client certificate (env COFFER_CLIENT_CERT)")
	f.StringVar(&keyFile, "client-key", "", "PEM file of the client certificate's key (env COFFER_CLIENT_KEY)")
	f.StringVar(&req.TTL, "ttl", "", "lifetime of the token, like 15m (default the role's ttl)")
	f.BoolVar(&export, "export", false, "print a shell command that sets COFFER_TOKEN, for eval")
	return cmd
}

// newAuthRenewCmd builds `coffer auth renew`.
func newAuthRenewCmd() *cobra.Command {
	var accessor, increment string
	cmd := &cobra.Command{
		Use:   "renew [--accessor ACCESSOR] [--increment DURATION]",
		Short: "Extend a role token's lifetime, up to its maximum",
		Long: `Extend the lifetime of the role token in use, or of the one named by
--accessor, to --increment from now (default: the role's ttl). A token
never lives past its maximum lifetime (the role's max_ttl from when it was
issued); after that, log in again.`,
		Example: `  coffer auth renew --increment 30m
  coffer auth renew --accessor acc_3f1c...`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkPeriodFlag("increment", increment); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			var ti *client.TokenInfo
			if accessor != "" {
				ti, err = c.RenewToken(cmd.Context(), accessor, increment)
			} else {
				ti, err = c.RenewSelf(cmd.Context(), increment)
			}
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printJSON(cmd.OutOrStdout(), ti)
			}
			return printToken(cmd, "", ti)
		},
	}
	cmd.Flags().StringVar(&accessor, "accessor", "", "accessor of the token to renew (default: the token in use)")
	cmd.Flags().StringVar(&increment, "increment", "", "new lifetime from now, like 30m (default the role's ttl)")
	return cmd
}

// newAuthRevokeCmd builds `coffer auth revoke`.
func newAuthRevokeCmd() *cobra.Command {
	var role, principal string
	cmd := &cobra.Command{
		Use:   "revoke --role ROLE | --principal PRINCIPAL",
		Short: "Revoke every token of a role, or every token a principal obtained",
		Long: `Revoke tokens in bulk and print how many were revoked.

--role ROLE revokes every temporary token of the role. --principal revokes
every token the principal holds or obtained (access-key:ID, token:ACCESSOR,
kubernetes:CLUSTER/NAMESPACE/SERVICEACCOUNT, cert:NAME), and refuses its
Kubernetes service-account tokens issued before now.

To revoke one token, use 'coffer token revoke'.`,
		Example: `  coffer auth revoke --role deploy
  coffer auth revoke --principal kubernetes:prod/payments/api`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (role == "") == (principal == "") {
				return usageErrorf("give either --role or --principal")
			}
			if kind, id, ok := strings.Cut(principal, ":"); principal != "" && (!ok || kind == "" || id == "") {
				return usageErrorf("invalid --principal %q: want KIND:ID like access-key:cfak_..., token:acc_..., kubernetes:CLUSTER/NAMESPACE/SERVICEACCOUNT or cert:NAME", principal)
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			var n int
			if role != "" {
				n, err = c.RevokeRoleTokens(cmd.Context(), role)
			} else {
				n, err = c.RevokePrincipal(cmd.Context(), principal)
			}
			if err != nil {
				return err
			}
			return printRevoked(cmd, n)
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "revoke every token of this role")
	cmd.Flags().StringVar(&principal, "principal", "", "revoke every token this principal holds or obtained")
	return cmd
}

// printRevoked reports the count of a bulk revocation.
func printRevoked(cmd *cobra.Command, n int) error {
	if wantJSON(cmd) {
		return printJSON(cmd.OutOrStdout(), client.RevokeCountResponse{Revoked: n})
	}
	_, err := fmt.Fprintf(cmd.OutOrStdout(), "Revoked %d token%s\n", n, plural(n))
	return err
}

// checkExport rejects --export with -o json: each is a whole output.
func checkExport(cmd *cobra.Command, export bool) error {
	if export && wantJSON(cmd) {
		return usageErrorf("give either --export or -o json, not both")
	}
	return nil
}

// printIssuedToken writes a token a login issued: as token create does,
// as JSON, or as a shell command that exports it.
func printIssuedToken(cmd *cobra.Command, resp *client.CreateTokenResponse, export bool) error {
	switch {
	case export:
		_, err := fmt.Fprintf(cmd.OutOrStdout(), "export %s=%s\n", client.EnvToken, shellQuote(resp.Token))
		return err
	case wantJSON(cmd):
		return printJSON(cmd.OutOrStdout(), resp)
	}
	if err := printToken(cmd, resp.Token, &resp.TokenInfo); err != nil {
		return err
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "The token is shown only once; its accessor can look it up, renew or revoke it later.")
	return nil
}

// shellQuote quotes s for a POSIX shell unless it needs no quoting.
func shellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.,:/+=@", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// checkCIDRs validates the networks of the repeatable flag name: CIDRs
// like 10.0.0.0/8, or single addresses.
func checkCIDRs(name string, values []string) error {
	for _, v := range values {
		if _, err := netip.ParsePrefix(v); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(v); err == nil {
			continue
		}
		return usageErrorf("invalid --%s %q: want a network like 10.0.0.0/8 or an address", name, v)
	}
	return nil
}

// readDocument reads a policy or role document from path ("-" is standard
// input) and refuses an empty one.
func readDocument(cmd *cobra.Command, path, what string) (string, error) {
	data, err := readInput(cmd, path, what, "give a FILE, or - for standard input")
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(string(data)) == "" {
		name := path
		if name == "-" {
			name = "standard input"
		}
		return "", usageErrorf("the %s in %s is empty", what, name)
	}
	return string(data), nil
}

// Modes of `coffer auth cluster register`.
const (
	clusterModeJWKS        = "jwks"
	clusterModeTokenReview = "tokenreview"
)

// newAuthClusterCmd builds `coffer auth cluster`.
func newAuthClusterCmd() *cobra.Command {
	cmd := groupCmd("cluster", "Register the Kubernetes clusters whose service accounts may log in")
	cmd.AddCommand(newClusterRegisterCmd(), newClusterListCmd(), newClusterGetCmd(), newClusterDeleteCmd())
	return cmd
}

// clusterFlags are the flags of `coffer auth cluster register`.
type clusterFlags struct {
	mode, issuer, jwksFile, discoveryURL string
	apiServer, caFile, reviewerTokenFile string
}

// cluster checks the flags against the mode and reads the files they
// name into a registration.
func (f *clusterFlags) cluster(name string) (client.Cluster, error) {
	cl := client.Cluster{Name: name, Mode: f.mode, Issuer: f.issuer, DiscoveryURL: f.discoveryURL, APIServer: f.apiServer}
	switch f.mode {
	case clusterModeJWKS:
		switch {
		case f.apiServer != "":
			return cl, usageErrorf("--api-server is for --mode tokenreview; jwks mode takes --jwks-file or --discovery-url")
		case (f.jwksFile == "") == (f.discoveryURL == ""):
			return cl, usageErrorf("--mode jwks needs either --jwks-file (with --issuer) or --discovery-url")
		case f.jwksFile != "" && f.issuer == "":
			return cl, usageErrorf("--jwks-file needs --issuer, the iss claim of the cluster's tokens")
		case f.jwksFile != "" && (f.caFile != "" || f.reviewerTokenFile != ""):
			return cl, usageErrorf("--ca-file and --reviewer-token-file are for --discovery-url or --mode tokenreview")
		}
	case clusterModeTokenReview:
		switch {
		case f.jwksFile != "" || f.discoveryURL != "" || f.issuer != "":
			return cl, usageErrorf("--issuer, --jwks-file and --discovery-url are for --mode jwks")
		case f.apiServer == "" || f.reviewerTokenFile == "":
			return cl, usageErrorf("--mode tokenreview needs --api-server and --reviewer-token-file")
		}
	case "":
		return cl, usageErrorf("--mode is required: jwks or tokenreview")
	default:
		return cl, usageErrorf("invalid --mode %q: want jwks or tokenreview", f.mode)
	}
	read := func(path, what string) (string, error) {
		if path == "" {
			return "", nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("reading the %s: %w", what, err)
		}
		return string(data), nil
	}
	var err error
	if cl.JWKS, err = read(f.jwksFile, "JWKS"); err != nil {
		return cl, err
	}
	if cl.CACert, err = read(f.caFile, "CA certificate"); err != nil {
		return cl, err
	}
	if cl.ReviewerToken, err = read(f.reviewerTokenFile, "reviewer token"); err != nil {
		return cl, err
	}
	cl.ReviewerToken = strings.TrimSpace(cl.ReviewerToken)
	return cl, nil
}

// newClusterRegisterCmd builds `coffer auth cluster register`.
func newClusterRegisterCmd() *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "register NAME --mode jwks|tokenreview ...",
		Short: "Register (or replace) a Kubernetes cluster",
		Long: `Register a Kubernetes cluster, so that its service accounts can log in
('coffer auth kubernetes') as the roles that trust them.

--mode jwks verifies service-account tokens locally with the cluster's
public keys: give them with --jwks-file (the output of
'kubectl get --raw /openid/v1/jwks') and --issuer, or let the server fetch
both by OIDC discovery from --discovery-url (the API server, or the issuer
URL where it is published: the server reads
URL/.well-known/openid-configuration; --ca-file and --reviewer-token-file
reach it when it is not public).

--mode tokenreview asks the cluster's TokenReview API about every token:
give --api-server, --reviewer-token-file (a token allowed to create
TokenReviews) and, unless the API server's certificate is publicly
trusted, --ca-file.`,
		Example: `  coffer auth cluster register prod --mode jwks \
    --issuer https://kubernetes.default.svc.cluster.local --jwks-file prod-jwks.json
  coffer auth cluster register prod --mode jwks --discovery-url https://10.0.0.1:6443 \
    --ca-file prod-ca.crt --reviewer-token-file reviewer.jwt
  coffer auth cluster register dev --mode tokenreview --api-server https://10.0.0.1:6443 \
    --ca-file dev-ca.crt --reviewer-token-file reviewer.jwt`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := f.cluster(args[0])
			if err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			out, err := c.RegisterCluster(cmd.Context(), cl)
			if err != nil {
				return err
			}
			return printCluster(cmd, out)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.mode, "mode", "", "how tokens are verified: jwks or tokenreview (required)")
	fl.StringVar(&f.issuer, "issuer", "", "iss claim of the cluster's service-account tokens (jwks)")
	fl.StringVar(&f.jwksFile, "jwks-file", "", "JSON Web Key Set of the cluster's token signing keys (jwks)")
	fl.StringVar(&f.discoveryURL, "discovery-url", "", "API server or issuer URL the server fetches issuer and keys from by OIDC discovery (jwks)")
	fl.StringVar(&f.apiServer, "api-server", "", "URL of the cluster's API server (tokenreview)")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM file of the CA of the API server or discovery URL")
	fl.StringVar(&f.reviewerTokenFile, "reviewer-token-file", "", "file of a token allowed to create TokenReviews (or to read discovery)")
	_ = cmd.RegisterFlagCompletionFunc("mode", cobra.FixedCompletions(
		[]string{clusterModeJWKS, clusterModeTokenReview}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// newClusterListCmd builds `coffer auth cluster list`.
func newClusterListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the registered clusters",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			l, err := c.ListClusters(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				if l == nil {
					l = []client.Cluster{}
				}
				return printJSON(cmd.OutOrStdout(), client.ClusterList{Clusters: l})
			}
			if len(l) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No clusters.")
				return nil
			}
			rows := make([][]string, 0, len(l))
			for _, cl := range l {
				rows = append(rows, []string{cl.Name, cl.Mode, orDash(cl.Issuer), orDash(cl.APIServer), fmtTime(cl.CreatedAt)})
			}
			return printTable(cmd.OutOrStdout(), []string{"NAME", "MODE", "ISSUER", "API SERVER", "CREATED"}, rows)
		},
	}
}

// newClusterGetCmd builds `coffer auth cluster get`.
func newClusterGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Describe a registered cluster",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			cl, err := c.GetCluster(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printCluster(cmd, cl)
		},
	}
}

// newClusterDeleteCmd builds `coffer auth cluster delete`.
func newClusterDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Forget a cluster; its service accounts can no longer log in",
		Long: `Forget a cluster: its service accounts can no longer log in. Tokens they
already got live out their lifetime; 'coffer auth revoke --principal
kubernetes:NAME/NAMESPACE/SERVICEACCOUNT' ends them sooner.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteCluster(cmd.Context(), args[0]); err != nil {
				return err
			}
			if !wantJSON(cmd) {
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted cluster %s\n", args[0])
			}
			return nil
		},
	}
}

// printCluster writes a cluster in the chosen format. The reviewer token
// is never returned by the server; the JWKS is summarized.
func printCluster(cmd *cobra.Command, cl *client.Cluster) error {
	if wantJSON(cmd) {
		return printJSON(cmd.OutOrStdout(), cl)
	}
	ca := "-"
	if cl.CACert != "" {
		ca = "set"
	}
	jwks := "-"
	if cl.JWKS != "" {
		var set struct {
			Keys []json.RawMessage `json:"keys"`
		}
		jwks = "set"
		if json.Unmarshal([]byte(cl.JWKS), &set) == nil {
			jwks = fmt.Sprintf("%d key%s", len(set.Keys), plural(len(set.Keys)))
		}
	}
	return printFields(cmd.OutOrStdout(), []field{
		{"Name", cl.Name},
		{"Mode", cl.Mode},
		{"Issuer", orDash(cl.Issuer)},
		{"JWKS", jwks},
		{"Discovery URL", orDash(cl.DiscoveryURL)},
		{"API server", orDash(cl.APIServer)},
		{"CA certificate", ca},
		{"Created", fmtTime(cl.CreatedAt)},
	})
}
