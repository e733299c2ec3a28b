package cli

import (
	"fmt"
	"strconv"
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
	cmd.AddCommand(newOperatorSnapshotCmd(), newOperatorMigrateCmd())                                // operator_snapshot.go
	cmd.AddCommand(newOperatorGenerateRootCmd(), newOperatorRekeyCmd(), newOperatorMigrateSealCmd()) // operator_quorum.go
	return cmd
}

// newOperatorInitCmd builds `coffer operator init`.
func newOperatorInitCmd() *cobra.Command {
	var shares, threshold, recShares, recThreshold int
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Initialize a new server and print its unseal (or recovery) shares and root token",
		Long: `Initialize a new server. The root key is split into --shares unseal shares,
any --threshold of which unseal the server. The shares and the root token are
printed once and never again: hand each share to a different operator.

On a server configured with an auto-unseal (an HSM, a TPM or another Coffer),
the seal protects the root key and the server unseals itself at once; the
shares printed are recovery shares (--recovery-shares and --recovery-threshold
are other names for --shares and --threshold). A quorum of recovery shares
authorises 'coffer operator generate-root', 'rekey' and 'migrate-seal', and an
unseal after 'coffer operator seal'; they decrypt nothing by themselves.`,
		Example: "  coffer operator init --shares 5 --threshold 3\n  coffer operator init --recovery-shares 5 --recovery-threshold 3",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			recovery := fl.Changed("recovery-shares") || fl.Changed("recovery-threshold")
			for _, p := range []struct {
				name  string
				v     *int
				alias int
			}{{"shares", &shares, recShares}, {"threshold", &threshold, recThreshold}} {
				if !fl.Changed("recovery-" + p.name) {
					continue
				}
				if fl.Changed(p.name) && *p.v != p.alias {
					return usageErrorf("--%s %d and --recovery-%s %d disagree: they are the same setting, give one", p.name, *p.v, p.name, p.alias)
				}
				*p.v = p.alias
			}
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
			if recovery {
				// Recovery shares only exist under an auto-unseal: on a
				// Shamir server the same counts would make unseal shares,
				// which the operator did not ask for.
				st, err := c.SealStatus(cmd.Context())
				if err != nil {
					return err
				}
				if st.Seal == nil {
					return usageErrorf("this server has no auto-unseal configured, so it has no recovery shares: use --shares and --threshold for its unseal shares")
				}
			}
			resp, err := c.Init(cmd.Context(), client.InitRequest{Shares: shares, Threshold: threshold})
			if err != nil {
				return err
			}
			if isAutoSeal(resp.Type) {
				return printAutoInit(cmd, resp, threshold)
			}
			const warning = "The unseal shares and the root token are shown only once. Store each share\nsafely, apart from the others; without " +
				"the threshold of shares the data cannot be recovered."
			if wantJSON(cmd) {
				fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: "+warning)
				return printData(cmd, resp)
			}
			w := cmd.OutOrStdout()
			fields := shareFields("Unseal share", resp.Shares)
			fields = append(fields, field{"Root token", resp.RootToken})
			if err := printFields(w, fields); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nServer initialized with %d shares and a threshold of %d. It is sealed:\nunseal it with 'coffer operator unseal', once per share, %d times.\n\nWARNING: %s\n",
				len(resp.Shares), threshold, threshold, warning)
			return nil
		},
	}
	cmd.Flags().IntVar(&shares, "shares", 5, "number of unseal shares to split the root key into (recovery shares under an auto-unseal)")
	cmd.Flags().IntVar(&threshold, "threshold", 3, "number of shares needed to unseal (recovery shares needed to authorise, under an auto-unseal)")
	cmd.Flags().IntVar(&recShares, "recovery-shares", 5, "number of recovery shares, under an auto-unseal (the same as --shares)")
	cmd.Flags().IntVar(&recThreshold, "recovery-threshold", 3, "number of recovery shares needed to authorise, under an auto-unseal (the same as --threshold)")
	return cmd
}

// isAutoSeal reports whether typ, the seal type a server reports, is an
// auto-unseal ("" is a server from before seal types: Shamir).
func isAutoSeal(typ string) bool {
	return typ != "" && typ != sealShamir
}

// sealShamir is the seal type of unseal shares.
const sealShamir = "shamir"

// shareFields lists shares as "label N" fields, from 1.
func shareFields(label string, shares []string) []field {
	fields := make([]field, 0, len(shares)+1)
	for i, s := range shares {
		fields = append(fields, field{fmt.Sprintf("%s %d", label, i+1), s})
	}
	return fields
}

// printAutoInit prints the answer to init on a server with an auto-unseal:
// recovery shares, which decrypt nothing, and the root token.
func printAutoInit(cmd *cobra.Command, resp *client.InitResponse, threshold int) error {
	const warning = "The recovery shares and the root token are shown only once. Store each share\nsafely, apart from the others; " +
		"without the threshold of recovery shares no new root token\ncan be generated, no share rekeyed and no seal migrated."
	if wantJSON(cmd) {
		fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: "+warning)
		return printData(cmd, resp)
	}
	w := cmd.OutOrStdout()
	fields := shareFields("Recovery share", resp.RecoveryShares)
	fields = append(fields, field{"Root token", resp.RootToken})
	if err := printFields(w, fields); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nServer initialized with %d recovery shares and a threshold of %d. It unsealed\nitself through its %s seal, and does so again at every start.\n"+
		"Recovery shares authorise 'coffer operator generate-root', 'rekey' and\n'migrate-seal' (and 'unseal' after 'coffer operator seal'); they decrypt nothing\nby themselves.\n\nWARNING: %s\n",
		len(resp.RecoveryShares), threshold, resp.Type, warning)
	return nil
}

// newOperatorUnsealCmd builds `coffer operator unseal`.
func newOperatorUnsealCmd() *cobra.Command {
	var reset bool
	cmd := &cobra.Command{
		Use:   "unseal [SHARE]",
		Short: "Submit one unseal share (or recovery share, under an auto-unseal)",
		Long: `Submit one unseal share. Without SHARE, it is read from the terminal without
echo, or as one line from standard input when that is not a terminal (which
keeps it out of the shell history). Repeat with different shares until the
threshold is reached. --reset discards the shares submitted so far.

A server with an auto-unseal unseals itself; after 'coffer operator seal' it
takes a quorum of recovery shares here instead. A server whose store is
protected by another seal than the one configured refuses with
migration_pending: finish the migration with 'coffer operator migrate-seal'.`,
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
				share, err := readShare(cmd, "", "unseal share", "pass it as an argument or on standard input")
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
				fmt.Fprintf(cmd.OutOrStdout(), "Unseal progress reset: %d/%d\n", st.Progress, sealQuorum(st))
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "Unseal progress: %d/%d\n", st.Progress, sealQuorum(st))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&reset, "reset", false, "discard the shares submitted so far")
	return cmd
}

// sealQuorum returns how many shares unseal (or authorise on) the server
// of s: its unseal threshold under Shamir, its recovery threshold under an
// auto-unseal.
func sealQuorum(s *client.SealStatus) int {
	if isAutoSeal(s.Type) {
		return s.RecoveryThreshold
	}
	return s.Threshold
}

// maxShareLen bounds what is read as one share: a share is a few dozen
// characters, so anything much longer is the wrong file.
const maxShareLen = 4096

// readShare returns one share: from the file inFile when given (which must
// hold one line), else prompted for without echo on a terminal, else one
// line of standard input. what names it and hint says how to give it, for
// the error when there is none. The prompt says "share": under an auto-unseal it is a
// recovery share.
func readShare(cmd *cobra.Command, inFile, what, hint string) (string, error) {
	if inFile != "" && inFile != "-" {
		data, err := readInput(cmd, inFile, "share", hint)
		if err != nil {
			return "", err
		}
		defer clear(data)
		if len(data) > maxShareLen {
			return "", fmt.Errorf("%s holds %d bytes, too many for a share: give a file with one share", inFile, len(data))
		}
		share := strings.TrimSpace(string(data))
		if strings.ContainsAny(share, "\r\n") {
			return "", fmt.Errorf("%s holds more than one line: give one share per invocation, in a file of its own", inFile)
		}
		return share, nil
	}
	if fd, tty := stdinIsTerminal(cmd); tty {
		fmt.Fprint(cmd.ErrOrStderr(), "Share (unseal or recovery; input hidden): ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		defer clear(b)
		if err != nil {
			return "", fmt.Errorf("reading the share: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	line, err := readLine(cmd.InOrStdin())
	if err != nil {
		return "", usageErrorf("no %s given: %s", what, hint)
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
		Use:     "status",
		Aliases: []string{"seal-status"},
		Short:   "Show whether the server is initialized and sealed, and its seal",
		Long: `Show whether the server is initialized and sealed, what protects its root key
(Shamir unseal shares or an auto-unseal: pkcs11, tpm2, transit), the unseal or
recovery share configuration, a pending seal migration, and the health of the
auto-unseal (its last check and unseal error, whether it retries, whether an
operator sealed it, how long the last unseal took). 'coffer operator
seal-status' is the same command. The exit code is 0 when the server is
unsealed, 3 when it is sealed (or not initialized) and 1 on error, so scripts
can wait for it (docs/cli.md).`,
		Example: "  coffer operator status\n  coffer operator seal-status -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.SealStatus(cmd.Context())
			if err != nil {
				return err
			}
			if err := printOperatorStatus(cmd, st); err != nil {
				return err
			}
			if st.Sealed {
				return &exitError{code: exitNo}
			}
			return nil
		},
	}
}

// printOperatorStatus writes the seal status in the chosen format: with
// the seal type, the share configuration, a pending migration and the
// auto-unseal's health. A server from before seal types (no type) gets
// the older listing.
func printOperatorStatus(cmd *cobra.Command, s *client.SealStatus) error {
	if wantJSON(cmd) || s.Type == "" {
		return printSealStatus(cmd, s)
	}
	fields := []field{
		{"Initialized", strconv.FormatBool(s.Initialized)},
		{"Sealed", strconv.FormatBool(s.Sealed)},
		{"Seal type", s.Type},
		{"Configured seal", orDash(s.ConfiguredType)},
		{"Migration pending", strconv.FormatBool(s.MigrationPending)},
	}
	if isAutoSeal(s.Type) {
		fields = append(fields,
			field{"Recovery shares", strconv.Itoa(s.RecoveryShares)},
			field{"Recovery threshold", strconv.Itoa(s.RecoveryThreshold)})
	} else {
		fields = append(fields,
			field{"Total shares", strconv.Itoa(s.Shares)},
			field{"Threshold", strconv.Itoa(s.Threshold)})
	}
	if s.Sealed && s.Initialized {
		label := "Unseal progress"
		if s.MigrationPending {
			label = "Migration progress"
		}
		fields = append(fields, field{label, fmt.Sprintf("%d/%d", s.Progress, sealQuorum(s))})
	}
	fields = append(fields, field{"Version", orDash(s.Version)})
	if h := s.Seal; h != nil {
		fields = append(fields,
			field{"Auto-unseal", h.Type},
			field{"Auto-unseal info", fmtMap(h.Info)},
			field{"Healthy", strconv.FormatBool(h.Healthy)},
			field{"Health checked", fmtTime(h.CheckedAt)})
		if h.HealthError != "" {
			fields = append(fields, field{"Health error", h.HealthError})
		}
		fields = append(fields,
			field{"Last unseal error", orDash(h.LastUnsealError)},
			field{"Retrying", strconv.FormatBool(h.Retrying)},
			field{"Failures", strconv.FormatInt(h.Failures, 10)},
			field{"Sealed by operator", strconv.FormatBool(h.SealedByOperator)})
		if !h.UnsealedAt.IsZero() {
			fields = append(fields,
				field{"Unsealed at", fmtTime(h.UnsealedAt)},
				field{"Unseal seconds", strconv.FormatFloat(h.UnsealSeconds, 'f', 3, 64)})
		}
	}
	if err := printFields(cmd.OutOrStdout(), fields); err != nil {
		return err
	}
	if s.MigrationPending {
		fmt.Fprintf(cmd.ErrOrStderr(), "A seal migration from %s to %s is pending: submit a quorum of the current %s with 'coffer operator migrate-seal'.\n",
			s.Type, orDash(s.ConfiguredType), shareKindOf(s))
	}
	return nil
}

// shareKindOf names the shares that authorise on the server of s.
func shareKindOf(s *client.SealStatus) string {
	if isAutoSeal(s.Type) {
		return "recovery shares"
	}
	return "unseal shares"
}
