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
		newAccessKeyUpdateCmd(),
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
				return printData(cmd, resp)
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
				return printData(cmd, client.AccessKeyList{AccessKeys: l})
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
				return printData(cmd, a)
			}
			return printAccessKey(cmd, a, "")
		},
	}
}

// newAccessKeyUpdateCmd builds `coffer access-key update`.
func newAccessKeyUpdateCmd() *cobra.Command {
	var (
		policies    []string
		description string
	)
	cmd := &cobra.Command{
		Use:   "update ID [--policy P]... [--description D]",
		Short: "Change an access key's policies or description",
		Long: `Change the policies an access key carries (--policy replaces them all) or
its description. Only what is given changes. A key may not be given a
policy its updater does not hold itself. Enable and disable have their own
commands.`,
		Example: `  coffer access-key update cfak_... --policy ci-deploy --policy ci-read
  coffer access-key update cfak_... --description "GitHub Actions, repo app"`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req client.UpdateAccessKeyRequest
			if cmd.Flags().Changed("policy") {
				req.Policies = &policies
			}
			if cmd.Flags().Changed("description") {
				req.Description = &description
			}
			if req.Policies == nil && req.Description == nil {
				return usageErrorf("nothing to update: give --policy or --description")
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			a, err := c.UpdateAccessKey(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, a)
			}
			return printAccessKey(cmd, a, "")
		},
	}
	cmd.Flags().StringArrayVar(&policies, "policy", nil, "stored policy `NAME` the key carries from now on (repeatable; replaces the list)")
	cmd.Flags().StringVar(&description, "description", "", "new description")
	return cmd
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
				return printData(cmd, a)
			}
			return printAccessKey(cmd, a, "")
		},
	}
}

// newAccessKeyDeleteCmd builds `coffer access-key delete`.
func newAccessKeyDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an access key for good",
		Long: `Delete an access key: requests signed with it are refused from now on.
Role tokens it obtained live out their lifetime; 'coffer auth revoke
--principal access-key:ID' ends them too. It asks for confirmation on a
terminal; --yes confirms in scripts.`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, "delete the access key "+args[0]+" for good"); err != nil {
				return err
			}
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
	addYesFlag(cmd)
	return cmd
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
