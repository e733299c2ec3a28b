package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// Bounds of key schedule-deletion --pending-days.
const (
	minPendingDays     = 7
	maxPendingDays     = 30
	defaultPendingDays = 30
)

// newKeyCmd builds `coffer key`.
func newKeyCmd() *cobra.Command {
	cmd := groupCmd("key", "Create and manage key encryption keys")
	cmd.Long = `Create and manage key encryption keys. A KEY argument is a key id or an
alias such as alias/payments.`
	cmd.AddCommand(
		newKeyCreateCmd(),
		newKeyListCmd(),
		newKeyGetCmd(),
		newKeyUpdateCmd(),
		newKeyActionCmd("enable", "Enable a disabled key", (*client.Client).EnableKey),
		newKeyActionCmd("disable", "Disable a key: it can no longer encrypt or decrypt", (*client.Client).DisableKey),
		newKeyActionCmd("rotate", "Add a new primary version to a key; old versions still decrypt", (*client.Client).RotateKey),
		newKeyScheduleDeletionCmd(),
		newKeyActionCmd("cancel-deletion", "Cancel a scheduled deletion; the key comes back disabled", (*client.Client).CancelKeyDeletion),
		newAliasCmd(),
		newKeyPolicyCmd(),
	)
	return cmd
}

// newKeyPolicyCmd builds `coffer key policy`.
func newKeyPolicyCmd() *cobra.Command {
	cmd := groupCmd("policy", "Show, set and remove a key's key policy")
	cmd.Long = `Show, set and remove the key policy of a key: a policy document that
narrows who may use the key and how. A request on the key must be allowed
by the caller's identity policies and by the key policy, and a deny in
either wins. Keys without a key policy follow identity policies alone.`
	cmd.AddCommand(newKeyPolicyGetCmd(), newKeyPolicyPutCmd(), newKeyPolicyDeleteCmd())
	return cmd
}

// newKeyPolicyGetCmd builds `coffer key policy get`.
func newKeyPolicyGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get KEY",
		Short: "Print a key's key policy",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			kp, err := c.GetKeyPolicy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, kp)
			}
			if kp.Document == "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "Key %s has no key policy.\n", kp.KeyID)
				return nil
			}
			doc := kp.Document
			if !strings.HasSuffix(doc, "\n") {
				doc += "\n"
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), doc)
			return err
		},
	}
}

// newKeyPolicyPutCmd builds `coffer key policy put`.
func newKeyPolicyPutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "put KEY FILE",
		Short: "Set a key's key policy from a file",
		Long: `Set the key policy of KEY to the document in FILE (- for standard
input), replacing any. The server validates it first and names the line
and column of every problem.`,
		Example: "  coffer key policy put alias/payments payments-key-policy.yaml",
		Args:    exactArgs(2, "KEY", "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			doc, err := readDocument(cmd, args[1], "key policy")
			if err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			kp, err := c.PutKeyPolicy(cmd.Context(), args[0], doc)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, kp)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Set the key policy of key %s\n", kp.KeyID)
			return err
		},
	}
}

// newKeyPolicyDeleteCmd builds `coffer key policy delete`.
func newKeyPolicyDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete KEY",
		Short: "Remove a key's key policy",
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			kp, err := c.PutKeyPolicy(cmd.Context(), args[0], "")
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, kp)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Removed the key policy of key %s\n", kp.KeyID)
			return err
		},
	}
}

// newKeyCreateCmd builds `coffer key create`.
func newKeyCreateCmd() *cobra.Command {
	var req client.CreateKeyRequest
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a key",
		Example: `  coffer key create --alias alias/payments --description "card numbers" \
    --rotation-period 90d --tag team=payments --tag env=prod`,
		Args: exactArgs(0),
	}
	tags := addKVFlag(cmd, "tag", "tag to attach")
	cmd.Flags().StringVar(&req.Alias, "alias", "", "alias to create for the key, like alias/NAME")
	cmd.Flags().StringVar(&req.Description, "description", "", "description of the key")
	cmd.Flags().StringVar(&req.RotationPeriod, "rotation-period", "", "rotate automatically this often, like 90d or 12h (default no automatic rotation)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if req.Alias != "" {
			if err := checkAliasName("--alias", req.Alias); err != nil {
				return err
			}
		}
		if err := checkPeriodFlag("rotation-period", req.RotationPeriod); err != nil {
			return err
		}
		req.Tags = tags.Map()
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		k, err := c.CreateKey(cmd.Context(), req)
		if err != nil {
			return err
		}
		return printKey(cmd, k)
	}
	return cmd
}

// newKeyListCmd builds `coffer key list`.
func newKeyListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List keys",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			l, err := c.ListKeys(cmd.Context())
			if err != nil {
				return err
			}
			return printKeyList(cmd, l)
		},
	}
}

// newKeyGetCmd builds `coffer key get` (its old name, describe, is an
// alias).
func newKeyGetCmd() *cobra.Command {
	cmd := newKeyActionCmd("get", "Show a key's metadata", (*client.Client).DescribeKey)
	cmd.Aliases = []string{"describe"}
	return cmd
}

// newKeyActionCmd builds a command that takes one KEY, calls op on it and
// prints the key it returns.
func newKeyActionCmd(name, short string, op func(*client.Client, context.Context, string) (*client.Key, error)) *cobra.Command {
	return &cobra.Command{
		Use:   name + " KEY",
		Short: short,
		Args:  exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			k, err := op(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printKey(cmd, k)
		},
	}
}

// newKeyUpdateCmd builds `coffer key update`.
func newKeyUpdateCmd() *cobra.Command {
	var description, period string
	cmd := &cobra.Command{
		Use:   "update KEY",
		Short: "Change a key's description or rotation period",
		Long: `Change a key's description or rotation period. Only the flags given are
changed. --rotation-period "" (or off) turns automatic rotation off.`,
		Example: "  coffer key update alias/payments --rotation-period 30d\n  coffer key update alias/payments --rotation-period off",
		Args:    exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req client.UpdateKeyRequest
			if cmd.Flags().Changed("description") {
				req.Description = &description
			}
			if cmd.Flags().Changed("rotation-period") {
				if period == "off" || period == "none" {
					period = ""
				}
				if err := checkPeriodFlag("rotation-period", period); err != nil {
					return err
				}
				req.RotationPeriod = &period
			}
			if req.Description == nil && req.RotationPeriod == nil {
				return usageErrorf("nothing to update: give --description or --rotation-period")
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			k, err := c.UpdateKey(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			return printKey(cmd, k)
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "new description")
	cmd.Flags().StringVar(&period, "rotation-period", "", `new rotation period, like 90d or 12h; "" or off turns rotation off`)
	return cmd
}

// newKeyScheduleDeletionCmd builds `coffer key schedule-deletion`.
func newKeyScheduleDeletionCmd() *cobra.Command {
	var days int
	cmd := &cobra.Command{
		Use:   "schedule-deletion KEY",
		Short: "Schedule a key's deletion after a waiting period",
		Long: fmt.Sprintf(`Schedule a key's deletion after --pending-days days (%d..%d). The key is
unusable at once; until the date, 'coffer key cancel-deletion' brings it back.
After it, everything encrypted under the key is lost.`, minPendingDays, maxPendingDays),
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if days < minPendingDays || days > maxPendingDays {
				return usageErrorf("invalid --pending-days %d: want %d..%d", days, minPendingDays, maxPendingDays)
			}
			if err := confirm(cmd, fmt.Sprintf("schedule key %s for deletion in %d days (everything encrypted under it is lost after that)", args[0], days)); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			k, err := c.ScheduleKeyDeletion(cmd.Context(), args[0], client.ScheduleDeletionRequest{PendingDays: days})
			if err != nil {
				return err
			}
			return printKey(cmd, k)
		},
	}
	cmd.Flags().IntVar(&days, "pending-days", defaultPendingDays, "days before the key is deleted")
	addYesFlag(cmd)
	return cmd
}
