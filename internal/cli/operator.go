package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cofferkms/coffer/client"
)

// maxShares is the largest number of unseal shares the server can split.
const maxShares = 255

// newOperatorCmd builds `coffer operator`.
func newOperatorCmd() *cobra.Command {
	cmd := groupCmd("operator", "Initialize, unseal, seal and check a server")
	cmd.AddCommand(newOperatorInitCmd(), newOperatorUnsealCmd(), newOperatorSealCmd(), newOperatorStatusCmd(),
		newOperatorRotateKeyringCmd(), newOperatorRewrapCmd(), newOperatorMembersCmd())
	cmd.AddCommand(newOperatorSnapshotCmd(), newOperatorMigrateCmd()) // operator_snapshot.go
	return cmd
}

// newOperatorInitCmd builds `coffer operator init`.
func newOperatorInitCmd() *cobra.Command {
	var shares, threshold int
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Initialize a new server and print its unseal shares and root token",
		Long: `Initialize a new server. The root key is split into --shares unseal shares,
any --threshold of which unseal the server. The shares and the root token are
printed once and never again: hand each share to a different operator.`,
		Example: "  coffer operator init --shares 5 --threshold 3",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if shares < 1 || shares > maxShares {
				return usageErrorf("invalid --shares %d: want 1..%d", shares, maxShares)
			}
			if threshold < 1 || threshold > shares {
				return usageErrorf("invalid --threshold %d: want 1..%d (at most --shares)", threshold, shares)
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			resp, err := c.Init(cmd.Context(), client.InitRequest{Shares: shares, Threshold: threshold})
			if err != nil {
				return err
			}
			const warning = "The unseal shares and the root token are shown only once. Store each share\nsafely, apart from the others; without " +
				"the threshold of shares the data cannot be recovered."
			if wantJSON(cmd) {
				fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: "+warning)
				return printData(cmd, resp)
			}
			w := cmd.OutOrStdout()
			fields := make([]field, 0, len(resp.Shares)+1)
			for i, s := range resp.Shares {
				fields = append(fields, field{fmt.Sprintf("Unseal share %d", i+1), s})
			}
			fields = append(fields, field{"Root token", resp.RootToken})
			if err := printFields(w, fields); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nServer initialized with %d shares and a threshold of %d. It is sealed:\nunseal it with 'coffer operator unseal', once per share, %d times.\n\nWARNING: %s\n",
				len(resp.Shares), threshold, threshold, warning)
			return nil
		},
	}
	cmd.Flags().IntVar(&shares, "shares", 5, "number of unseal shares to split the root key into")
	cmd.Flags().IntVar(&threshold, "threshold", 3, "number of shares needed to unseal")
	return cmd
}

// newOperatorUnsealCmd builds `coffer operator unseal`.
func newOperatorUnsealCmd() *cobra.Command {
	var reset bool
	cmd := &cobra.Command{
		Use:   "unseal [SHARE]",
		Short: "Submit one unseal share",
		Long: `Submit one unseal share. Without SHARE, it is read from the terminal without
echo, or as one line from standard input when that is not a terminal (which
keeps it out of the shell history). Repeat with different shares until the
threshold is reached. --reset discards the shares submitted so far.`,
		Example: "  coffer operator unseal\n  coffer operator unseal < share-1.txt\n  coffer operator unseal --reset",
		Args:    maxArgs(1, "SHARE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := client.UnsealRequest{Reset: reset}
			switch {
			case reset && len(args) > 0:
				return usageErrorf("--reset takes no share")
			case reset:
			case len(args) == 1:
				warnSecretArg(cmd, "the SHARE argument", "run 'coffer operator unseal' without it to be prompted, or pipe it on standard input")
				req.Share = strings.TrimSpace(args[0])
			default:
				share, err := readShare(cmd)
				if err != nil {
					return err
				}
				req.Share = share
			}
			if !reset && req.Share == "" {
				return usageErrorf("empty unseal share")
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.Unseal(cmd.Context(), req)
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return printData(cmd, st)
			}
			switch {
			case !st.Sealed:
				fmt.Fprintln(cmd.OutOrStdout(), "Unsealed")
			case reset:
				fmt.Fprintf(cmd.OutOrStdout(), "Unseal progress reset: %d/%d\n", st.Progress, st.Threshold)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "Unseal progress: %d/%d\n", st.Progress, st.Threshold)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&reset, "reset", false, "discard the shares submitted so far")
	return cmd
}

// readShare prompts for a share without echo on a terminal, or reads one
// line from standard input.
func readShare(cmd *cobra.Command) (string, error) {
	if fd, tty := stdinIsTerminal(cmd); tty {
		fmt.Fprint(cmd.ErrOrStderr(), "Unseal share (input hidden): ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("reading unseal share: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	line, err := readLine(cmd.InOrStdin())
	if err != nil {
		return "", usageErrorf("no unseal share given: pass it as an argument or on standard input")
	}
	return strings.TrimSpace(line), nil
}

// newOperatorSealCmd builds `coffer operator seal`.
func newOperatorSealCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "seal",
		Short: "Seal the server (needs the root token)",
		Long: `Seal the server: it forgets its root key and refuses all key operations
until it is unsealed again with the threshold of shares. It asks for
confirmation on a terminal; --yes confirms in scripts.`,
		Example: "  coffer operator seal --yes",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := confirm(cmd, "seal the server: every key operation fails until the threshold of unseal shares is entered"); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			if err := c.Seal(cmd.Context()); err != nil {
				return err
			}
			if !wantJSON(cmd) {
				fmt.Fprintln(cmd.OutOrStdout(), "Sealed")
			}
			return nil
		},
	}
	addYesFlag(cmd)
	return cmd
}

// newOperatorStatusCmd builds `coffer operator status`.
func newOperatorStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the server is initialized and sealed",
		Long: `Show whether the server is initialized and sealed. The exit code is 0 when
the server is unsealed, 3 when it is sealed (or not initialized) and 1 on
error, so scripts can wait for it (docs/cli.md).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.SealStatus(cmd.Context())
			if err != nil {
				return err
			}
			if err := printSealStatus(cmd, st); err != nil {
				return err
			}
			if st.Sealed {
				return &exitError{code: exitNo}
			}
			return nil
		},
	}
}
