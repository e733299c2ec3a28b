package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// aliasPrefix starts every alias name.
const aliasPrefix = "alias/"

// checkAliasName rejects a name that is not alias/NAME; what names the
// argument or flag in the error.
func checkAliasName(what, name string) error {
	if !strings.HasPrefix(name, aliasPrefix) || len(name) == len(aliasPrefix) {
		return usageErrorf("invalid %s %q: an alias looks like alias/NAME", what, name)
	}
	return nil
}

// newAliasCmd builds `coffer key alias`.
func newAliasCmd() *cobra.Command {
	cmd := groupCmd("alias", "Manage key aliases (alias/NAME)")
	cmd.AddCommand(newAliasCreateCmd(), newAliasUpdateCmd(), newAliasDeleteCmd(), newAliasListCmd())
	return cmd
}

// newAliasCreateCmd builds `coffer key alias create`.
func newAliasCreateCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "create alias/NAME KEY",
		Short:   "Point a new alias at a key",
		Example: "  coffer key alias create alias/payments 0f8c...",
		Args:    exactArgs(2, "alias/NAME", "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkAliasName("alias name", args[0]); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			a, err := c.CreateAlias(cmd.Context(), client.Alias{Name: args[0], KeyID: args[1]})
			if err != nil {
				return err
			}
			return printAlias(cmd, a)
		},
	}
}

// newAliasUpdateCmd builds `coffer key alias update` (AWS's UpdateAlias):
// the alias names another key from one moment to the next, never none.
func newAliasUpdateCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "update alias/NAME KEY",
		Aliases: []string{"move"},
		Short:   "Point an existing alias at another key, atomically",
		Long: "Point an existing alias at another key, atomically: callers that name the alias use the old key\n" +
			"until the move and the new one after it; none finds the alias missing. Needs key:DeleteAlias on the\n" +
			"alias and its current key and key:CreateAlias on the alias and the new key. A concurrent move of the\n" +
			"same alias makes this one fail with a conflict: read the alias again and retry.",
		Example: "  coffer key alias update alias/payments 7d41...",
		Args:    exactArgs(2, "alias/NAME", "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkAliasName("alias name", args[0]); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			a, err := c.UpdateAlias(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return printAlias(cmd, a)
		},
	}
}

// printAlias prints the alias a create or an update answered.
func printAlias(cmd *cobra.Command, a *client.Alias) error {
	if wantJSON(cmd) {
		return printData(cmd, a)
	}
	return printFields(cmd.OutOrStdout(), []field{{"Alias", a.Name}, {"Key ID", a.KeyID}})
}

// newAliasDeleteCmd builds `coffer key alias delete`.
func newAliasDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete alias/NAME",
		Short: "Delete an alias (the key is not affected)",
		Args:  exactArgs(1, "alias/NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkAliasName("alias name", args[0]); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteAlias(cmd.Context(), args[0]); err != nil {
				return err
			}
			if !wantJSON(cmd) {
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted %s\n", args[0])
			}
			return nil
		},
	}
}

// newAliasListCmd builds `coffer key alias list`.
func newAliasListCmd() *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List aliases",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			l, err := c.ListAliases(cmd.Context(), key)
			if err != nil {
				return err
			}
			return printAliasList(cmd, l)
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "list only the aliases of this key")
	return cmd
}
