package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// newTokenCmd builds `coffer token`.
func newTokenCmd() *cobra.Command {
	cmd := groupCmd("token", "Create, look up and revoke API tokens")
	cmd.AddCommand(newTokenCreateCmd(), newTokenLookupCmd(), newTokenRevokeCmd())
	return cmd
}

// newTokenCreateCmd builds `coffer token create`.
func newTokenCreateCmd() *cobra.Command {
	var req client.CreateTokenRequest
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Create a token; it is shown only once",
		Example: "  coffer token create --ttl 8h --display-name ci-deploy",
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
				return printJSON(cmd.OutOrStdout(), resp)
			}
			if err := printTokenInfo(cmd, resp.Token, &resp.TokenInfo); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "The token is shown only once; its accessor can look it up or revoke it later.")
			return nil
		},
	}
	cmd.Flags().StringVar(&req.TTL, "ttl", "", "lifetime of the token, like 1h or 30m (default 24h)")
	cmd.Flags().StringVar(&req.DisplayName, "display-name", "", "name shown in audit logs and lookups")
	return cmd
}

// newTokenLookupCmd builds `coffer token lookup`.
func newTokenLookupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "lookup",
		Short: "Describe the token in use",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			ti, err := c.LookupSelf(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printJSON(cmd.OutOrStdout(), ti)
			}
			return printTokenInfo(cmd, "", ti)
		},
	}
}

// newTokenRevokeCmd builds `coffer token revoke`.
func newTokenRevokeCmd() *cobra.Command {
	var accessor string
	cmd := &cobra.Command{
		Use:     "revoke [TOKEN | --accessor ACCESSOR]",
		Short:   "Revoke a token, named by itself or by its accessor",
		Example: "  coffer token revoke --accessor 3f1c...",
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
	return cmd
}
