package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// This file holds `coffer auth cluster`: the registry of Kubernetes clusters
// whose service accounts may log in.

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
			return cl, usageErrorf("--k8s-ca-cert and --reviewer-token-file are for --discovery-url or --mode tokenreview")
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
URL/.well-known/openid-configuration; --k8s-ca-cert and --reviewer-token-file
reach it when it is not public).

--mode tokenreview asks the cluster's TokenReview API about every token:
give --api-server, --reviewer-token-file (a token allowed to create
TokenReviews) and, unless the API server's certificate is publicly
trusted, --k8s-ca-cert.`,
		Example: `  coffer auth cluster register prod --mode jwks \
    --issuer https://kubernetes.default.svc.cluster.local --jwks-file prod-jwks.json
  coffer auth cluster register prod --mode jwks --discovery-url https://10.0.0.1:6443 \
    --k8s-ca-cert prod-ca.crt --reviewer-token-file reviewer.jwt
  coffer auth cluster register dev --mode tokenreview --api-server https://10.0.0.1:6443 \
    --k8s-ca-cert dev-ca.crt --reviewer-token-file reviewer.jwt`,
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
	fl.StringVar(&f.caFile, "k8s-ca-cert", "", "PEM file of the CA of the API server or discovery URL")
	fl.StringVar(&f.reviewerTokenFile, "reviewer-token-file", "", "file of a token allowed to create TokenReviews (or to read discovery)")
	oldFlagNames(cmd, map[string]string{"ca-file": "k8s-ca-cert"})
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
				return printData(cmd, client.ClusterList{Clusters: l})
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
		return printData(cmd, cl)
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
