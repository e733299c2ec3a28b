package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// newAccessKeyCmd builds `coffer access-key`.
func newAccessKeyCmd() *cobra.Command {
	cmd := groupCmd("access-key", "Create and manage access keys: long-lived credentials for programs")
	cmd.Long = `Create and manage access keys: an id (cfak_...) and a secret (cfsk_...)
that a program sends with every request, allowed what the stored policies
it carries allow. The secret is shown once, at creation.

Programs and the CLI use one through COFFER_ACCESS_KEY_ID and
COFFER_SECRET_ACCESS_KEY (with COFFER_TOKEN unset). With COFFER_ROLE as
well, they assume that role and act in it.`
	cmd.AddCommand(
		newAccessKeyCreateCmd(),
		newAccessKeyListCmd(),
		newAccessKeyGetCmd(),
		newAccessKeyEnableCmd("disable", "Disable an access key: requests signed with it are refused", false),
		newAccessKeyEnableCmd("enable", "Enable a disabled access key", true),
		newAccessKeyDeleteCmd(),
	)
	return cmd
}

// newAccessKeyCreateCmd builds `coffer access-key create`.
func newAccessKeyCreateCmd() *cobra.Command {
	var req client.CreateAccessKeyRequest
	cmd := &cobra.Command{
		Use:   "create --policy P [--expires-in DURATION] [--description D]",
		Short: "Create an access key; its secret is shown only once",
		Example: `  coffer access-key create --policy ci-deploy --expires-in 90d --description "GitHub Actions"
  coffer access-key create --policy ci-deploy -o json > ci-key.json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(req.Policies) == 0 {
				return usageErrorf("--policy is required: an access key may do only what its policies allow")
			}
			if err := checkPeriodFlag("expires-in", req.ExpiresIn); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			resp, err := c.CreateAccessKey(cmd.Context(), req)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			if err := printAccessKey(cmd, &resp.AccessKey, resp.SecretAccessKey); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "The secret is shown only once; store it now. Use the key with COFFER_ACCESS_KEY_ID and COFFER_SECRET_ACCESS_KEY.")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&req.Policies, "policy", nil, "stored policy `NAME` the key carries (repeatable, required)")
	f.StringVar(&req.ExpiresIn, "expires-in", "", "lifetime of the key, like 90d (default: no expiry)")
	f.StringVar(&req.Description, "description", "", "description of the key, shown in lookups and audit logs")
	return cmd
}

// newAccessKeyListCmd builds `coffer access-key list`.
func newAccessKeyListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List access keys",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			l, err := c.ListAccessKeys(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				if l == nil {
					l = []client.AccessKey{}
				}
				return printJSON(cmd.OutOrStdout(), client.AccessKeyList{AccessKeys: l})
			}
			if len(l) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No access keys.")
				return nil
			}
			rows := make([][]string, 0, len(l))
			for _, a := range l {
				rows = append(rows, []string{a.ID, strconv.FormatBool(a.Enabled), fmtList(a.Policies),
					fmtTimePtr(a.LastUsedAt), fmtTimePtr(a.ExpiresAt), orDash(a.Description)})
			}
			return printTable(cmd.OutOrStdout(), []string{"ID", "ENABLED", "POLICIES", "LAST USED", "EXPIRES", "DESCRIPTION"}, rows)
		},
	}
}

// newAccessKeyGetCmd builds `coffer access-key get`.
func newAccessKeyGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Describe an access key, with when and where it was last used",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			a, err := c.GetAccessKey(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printJSON(cmd.OutOrStdout(), a)
			}
			return printAccessKey(cmd, a, "")
		},
	}
}

// newAccessKeyEnableCmd builds `coffer access-key enable` (enabled) or
// `coffer access-key disable`.
func newAccessKeyEnableCmd(name, short string, enabled bool) *cobra.Command {
	return &cobra.Command{
		Use:   name + " ID",
		Short: short,
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			a, err := c.UpdateAccessKey(cmd.Context(), args[0], client.UpdateAccessKeyRequest{Enabled: &enabled})
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printJSON(cmd.OutOrStdout(), a)
			}
			return printAccessKey(cmd, a, "")
		},
	}
}

// newAccessKeyDeleteCmd builds `coffer access-key delete`.
func newAccessKeyDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an access key for good",
		Long: `Delete an access key: requests signed with it are refused from now on.
Role tokens it obtained live out their lifetime; 'coffer auth revoke
--principal access-key:ID' ends them too.`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteAccessKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			if !wantJSON(cmd) {
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted access key %s\n", args[0])
			}
			return nil
		},
	}
}

// printAccessKey writes an access key, preceded by its secret when secret
// is non-empty (at creation).
func printAccessKey(cmd *cobra.Command, a *client.AccessKey, secret string) error {
	fields := []field{{"Access key ID", a.ID}}
	if secret != "" {
		fields = append(fields, field{"Secret access key", secret})
	}
	lastUsed := fmtTimePtr(a.LastUsedAt)
	if a.LastUsedAt == nil {
		lastUsed = "never"
	} else if a.LastSource != "" {
		lastUsed += " from " + a.LastSource
	}
	fields = append(fields,
		field{"Description", orDash(a.Description)},
		field{"Policies", fmtList(a.Policies)},
		field{"Enabled", strconv.FormatBool(a.Enabled)},
		field{"Created", fmtTime(a.CreatedAt)},
		field{"Expires", expires(a.ExpiresAt)},
		field{"Last used", lastUsed},
	)
	return printFields(cmd.OutOrStdout(), fields)
}
