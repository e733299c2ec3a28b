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
	cmd.AddCommand(newAliasCreateCmd(), newAliasDeleteCmd(), newAliasListCmd())
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
			if wantJSON(cmd) {
				return printData(cmd, a)
			}
			return printFields(cmd.OutOrStdout(), []field{{"Alias", a.Name}, {"Key ID", a.KeyID}})
		},
	}
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
