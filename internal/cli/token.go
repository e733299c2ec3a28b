package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// newTokenCmd builds `coffer token`.
func newTokenCmd() *cobra.Command {
	cmd := groupCmd("token", "Create, list, look up and revoke API tokens")
	cmd.AddCommand(newTokenCreateCmd(), newTokenListCmd(), newTokenLookupCmd(), newTokenRevokeCmd())
	return cmd
}

// newTokenCreateCmd builds `coffer token create`.
func newTokenCreateCmd() *cobra.Command {
	var req client.CreateTokenRequest
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a token; it is shown only once",
		Long: `Create a token; it is shown only once. The token may do what the stored
policies named by --policy allow (and look up, renew and revoke itself);
without any it may do nothing else. A token other than the root token can
give a new token only policies it carries itself.`,
		Example: "  coffer token create --ttl 8h --display-name ci-deploy --policy deploy",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkPeriodFlag("ttl", req.TTL); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			resp, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, resp)
			}
			if err := printToken(cmd, resp.Token, &resp.TokenInfo); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "The token is shown only once; its accessor can look it up or revoke it later.")
			return nil
		},
	}
	cmd.Flags().StringVar(&req.TTL, "ttl", "", "lifetime of the token, like 1h or 30m (default 24h)")
	cmd.Flags().StringVar(&req.DisplayName, "display-name", "", "name shown in audit logs and lookups")
	cmd.Flags().StringArrayVar(&req.Policies, "policy", nil, "stored policy `NAME` the token carries (repeatable)")
	return cmd
}

// newTokenListCmd builds `coffer token list`.
func newTokenListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the tokens that have not expired (never their values)",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			l, err := c.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				if l == nil {
					l = []client.TokenInfo{}
				}
				return printData(cmd, client.TokenList{Tokens: l})
			}
			rows := make([][]string, 0, len(l))
			for _, t := range l {
				rows = append(rows, []string{t.Accessor, orDash(t.Kind), orDash(t.DisplayName), orDash(t.Role),
					fmtList(t.Policies), fmtTime(t.CreatedAt), expires(t.ExpiresAt)})
			}
			return printTable(cmd.OutOrStdout(), []string{"ACCESSOR", "KIND", "DISPLAY NAME", "ROLE", "POLICIES", "CREATED", "EXPIRES"}, rows)
		},
	}
}

// newTokenLookupCmd builds `coffer token lookup`.
func newTokenLookupCmd() *cobra.Command {
	var accessor string
	cmd := &cobra.Command{
		Use:   "lookup [--accessor ACCESSOR]",
		Short: "Describe the token in use, or the one with an accessor",
		Example: `  coffer token lookup
  coffer token lookup --accessor acc_3f1c...`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			var ti *client.TokenInfo
			if accessor != "" {
				ti, err = c.LookupToken(cmd.Context(), accessor)
			} else {
				ti, err = c.LookupSelf(cmd.Context())
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
	cmd.Flags().StringVar(&accessor, "accessor", "", "accessor of the token to describe (default: the token in use)")
	return cmd
}

// newTokenRevokeCmd builds `coffer token revoke`.
func newTokenRevokeCmd() *cobra.Command {
	var accessor string
	cmd := &cobra.Command{
		Use:     "revoke [TOKEN | --accessor ACCESSOR]",
		Short:   "Revoke a token, named by itself or by its accessor",
		Example: "  coffer token revoke --accessor acc_3f1c...",
		Args:    maxArgs(1, "TOKEN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req client.RevokeTokenRequest
			switch {
			case len(args) == 1 && accessor != "":
				return usageErrorf("give either TOKEN or --accessor, not both")
			case len(args) == 1:
				req.Token = args[0]
			case accessor != "":
				req.Accessor = accessor
			default:
				return usageErrorf("give the TOKEN to revoke or its --accessor")
			}
			if req.Token != "" {
				warnSecretArg(cmd, "the TOKEN argument", "revoke by --accessor instead")
			}
			what := "revoke the token with accessor " + req.Accessor + " and every token made from it"
			if req.Token != "" {
				what = "revoke the token given and every token made from it"
			}
			if err := confirm(cmd, what); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), req); err != nil {
				return err
			}
			if !wantJSON(cmd) {
				fmt.Fprintln(cmd.OutOrStdout(), "Revoked")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&accessor, "accessor", "", "accessor of the token to revoke")
	addYesFlag(cmd)
	return cmd
}

// printToken writes token metadata, preceded by the token itself when
// token is non-empty. Fields that do not apply to the token's kind (a
// role, a subject, bound networks) are left out.
func printToken(cmd *cobra.Command, token string, ti *client.TokenInfo) error {
	var fields []field
	add := func(name, value string) { fields = append(fields, field{name, value}) }
	if token != "" {
		add("Token", token)
	}
	add("Accessor", orDash(ti.Accessor))
	add("Display name", orDash(ti.DisplayName))
	if ti.Kind != "" {
		add("Kind", ti.Kind)
	}
	if ti.Role != "" {
		add("Role", ti.Role)
	}
	if ti.Subject != "" {
		add("Subject", ti.Subject)
	}
	if ti.Cluster != "" || ti.Namespace != "" || ti.ServiceAccount != "" {
		add("Service account", ti.Cluster+"/"+ti.Namespace+"/"+ti.ServiceAccount)
	}
	if len(ti.Policies) > 0 {
		add("Policies", fmtList(ti.Policies))
	}
	if ti.Scoped {
		add("Scope-down policy", "yes")
	}
	if len(ti.BoundCIDRs) > 0 {
		add("Bound CIDRs", fmtList(ti.BoundCIDRs))
	}
	add("Root", strconv.FormatBool(ti.Root))
	add("Created", fmtTime(ti.CreatedAt))
	add("Expires", expires(ti.ExpiresAt))
	if ti.MaxExpiresAt != nil {
		add("Max expires", fmtTime(*ti.MaxExpiresAt))
	}
	return printFields(cmd.OutOrStdout(), fields)
}
