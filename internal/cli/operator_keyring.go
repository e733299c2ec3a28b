package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newOperatorRotateKeyringCmd builds `coffer operator rotate-keyring`.
func newOperatorRotateKeyringCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-keyring",
		Short: "Start a new barrier keyring term for every later write (needs sys:RotateKeyring)",
		Long: `Add a new term to the barrier keyring, the keys that encrypt every stored
entry, and make it the one new writes are sealed under. Entries written
before keep their term and stay readable; 'coffer operator rewrap' rewrites
them under the new term. Rotate when a keyring key may have been exposed, or
on a schedule.`,
		Example: "  coffer operator rotate-keyring\n  coffer operator rewrap",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			resp, err := c.RotateKeyring(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, resp)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Keyring rotated: new writes use term %d.\nRun 'coffer operator rewrap' to rewrite the entries written before.\n", resp.Term)
			return nil
		},
	}
}

// newOperatorRewrapCmd builds `coffer operator rewrap`.
func newOperatorRewrapCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rewrap",
		Short: "Rewrite stored entries under the newest keyring term (needs sys:RewrapKeyring)",
		Long: `Rewrite every stored entry that is sealed under an older barrier keyring
term under the active one. It runs beside normal traffic: each entry is
rewritten with compare-and-swap, so a concurrent write is never lost. If it is
interrupted, run it again: entries already rewritten are skipped. Old terms
stay in the keyring, so an entry restored from an older backup still opens.`,
		Example: "  coffer operator rewrap",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			resp, err := c.RewrapKeyring(cmd.Context())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, resp)
			}
			return printFields(cmd.OutOrStdout(), []field{
				{"Keyring term", fmt.Sprint(resp.Term)},
				{"Entries scanned", fmt.Sprint(resp.Scanned)},
				{"Rewrapped", fmt.Sprint(resp.Rewrapped)},
				{"Already current", fmt.Sprint(resp.Current)},
			})
		},
	}
}
