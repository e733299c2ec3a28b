package cli

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// This file holds how the CLI authenticates (resolveCredentials, used by
// newClient) and `coffer auth`: the logins that turn a credential into a
// temporary role token, renewal and bulk revocation. The registry of
// Kubernetes clusters is in cluster.go.

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

// warnCredentialConflict says which credential wins when a token and an
// access key are both set: the token does, silently until now, so that
// re-running 'coffer auth assume-role' after 'eval $(... --export)' acted
// with the role token instead of the access key and failed with a trust
// error that did not say why.
func warnCredentialConflict(cmd *cobra.Command, c credentials) {
	if c.token == "" || c.accessKeyID == "" {
		return
	}
	from, fix := client.EnvToken, "unset "+client.EnvToken
	if cmd.Flags().Changed(flagToken) {
		from, fix = "--token", "drop --token"
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "coffer: warning: both %s and %s are set; using %s (%s to use the access key)\n",
		from, client.EnvAccessKeyID, from, fix)
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
		Use: "kubernetes --role ROLE --sa-token-file PATH",
		Annotations: map[string]string{annotLogin: "The service-account token was refused: check that it is current, that its audience is one the role accepts, " +
			"that the cluster is registered ('coffer auth cluster list') and that the role trusts the service account ('coffer role get ROLE')."},
		Short: "Log in as a role with a Kubernetes service-account token",
		Long: `Exchange a Kubernetes projected service-account token (the file the
kubelet mounts) for a temporary token of ROLE. The role must trust the
service account (its kubernetes entries), and the cluster must be
registered ('coffer auth cluster register'). --cluster names it; it may be
left out when the token's issuer identifies the cluster.

Inside a pod, setting COFFER_ROLE and COFFER_TOKEN_FILE instead makes every
command log in by itself, and log in again before the token expires.`,
		Example: `  coffer auth kubernetes --role payments \
    --sa-token-file /var/run/secrets/tokens/coffer --cluster prod`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Role == "" || tokenFile == "" {
				return usageErrorf("--role and --sa-token-file are required")
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
	f.StringVar(&tokenFile, "sa-token-file", "", "file of the projected service-account token (required)")
	// --token-file names a file of a Coffer token everywhere else.
	oldFlagNames(cmd, map[string]string{"token-file": "sa-token-file"})
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
		Use: "cert --role ROLE",
		Annotations: map[string]string{annotLogin: "The certificate login was refused: check that the server has a client CA (tls.client_ca_file) that signed the certificate, " +
			"and that the role trusts its common name or DNS name ('coffer role get ROLE')."},
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
				return printData(cmd, ti)
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
		return printData(cmd, client.RevokeCountResponse{Revoked: n})
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
		return printData(cmd, resp)
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
