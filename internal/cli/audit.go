package cli

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/internal/audit"
)

// newAuditCmd builds `coffer audit`.
func newAuditCmd() *cobra.Command {
	cmd := groupCmd("audit", "Verify, search and investigate the audit log")
	cmd.AddCommand(newAuditVerifyCmd(), newAuditSearchCmd(), newAuditHashCmd(), newAuditPubkeyCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var pub string
	var openTail bool
	var firstSeq uint64
	cmd := &cobra.Command{
		Use:   "verify FILES...",
		Short: "Check the hash chain, sequence and signed checkpoints of audit log files",
		Long: `Verify reads audit log files in the order given (audit-<seq>.jsonl names sort
in chain order, so a shell glob works) as one stream and checks that sequence
numbers follow each other, that every record carries the hash of the one
before it, and that every checkpoint is signed by the audit key.

It reports the first missing, altered, reordered or truncated record by
sequence number and exits 1; it exits 0 when the log is intact. A log must
end with a checkpoint (the server writes one on rotation, every N records,
every few seconds and on shutdown); --allow-open-tail accepts unsigned
records at the end of a live log.

The log must also be complete at its head: it must start at seq 1, and every
file (format 2) begins with a signed start record and its checkpoints name
the first record of their file, so records removed from the head of a file
are reported. After older files were deleted on purpose (retention), pass
--first-seq with the first sequence number kept (the number in the oldest
file's name). Records a restarted server found unsigned after the last
checkpoint are listed as inherited unverified.

Without --pubkey, the key of the first checkpoint is trusted, which proves
integrity but not origin: pin the key printed by 'coffer audit pubkey'.`,
		Example: `  coffer audit verify --pubkey "$(coffer audit pubkey)" /var/lib/coffer/audit/audit-*.jsonl`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			var opt audit.VerifyOptions
			opt.AllowOpenTail = openTail
			opt.FirstSeq = firstSeq
			if pub != "" {
				s := pub
				if b, err := os.ReadFile(pub); err == nil {
					s = string(b)
				}
				k, err := audit.ParsePublicKey(s)
				if err != nil {
					return usageErrorf("--pubkey: %v", err)
				}
				opt.PublicKey = k
			}
			start := time.Now()
			res, err := audit.Verify(files, opt)
			if err != nil {
				return err
			}
			el := time.Since(start)
			if wantJSON(cmd) {
				if err := printData(cmd, res); err != nil {
					return err
				}
			} else if res.Problem == nil {
				n := res.Records + res.Checkpoints
				fmt.Fprintf(cmd.OutOrStdout(), "OK: %d records and %d checkpoints in %d files, seq %d..%d (%.0f records/s)\n",
					res.Records, res.Checkpoints, res.Files, res.FirstSeq, res.LastSeq, float64(n)/el.Seconds())
				if res.UnsignedTail > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "note: the last %d records follow the last checkpoint (seq %d) and are not signed yet\n", res.UnsignedTail, res.LastCheckpoint)
				}
				for _, r := range res.Unverified {
					fmt.Fprintf(cmd.OutOrStdout(), "note: records %d..%d were found unsigned when the server reopened the log (start record seq %d): they chain, but no server vouched for them\n", r.From, r.To, r.At)
				}
				if pub == "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "note: checkpoints were checked against the key they carry (%s); pass --pubkey to pin it\n", res.PublicKey)
				}
			}
			if res.Problem != nil {
				p := res.Problem
				return &exitError{code: 1, err: fmt.Errorf("audit log check failed at record seq %d (%s, %s line %d): %s", p.Seq, p.Kind, p.File, p.Line, p.Message)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&pub, "pubkey", "", "trusted audit public key (base64, or a file holding it)")
	cmd.Flags().BoolVar(&openTail, "allow-open-tail", false, "accept records after the last checkpoint (a log still being written)")
	cmd.Flags().Uint64Var(&firstSeq, "first-seq", 0, "the sequence number the log starts at after older files were removed on purpose (default 1)")
	return cmd
}

func newAuditSearchCmd() *cobra.Command {
	var q audit.Query
	var since, until string
	cmd := &cobra.Command{
		Use:   "search [flags] FILES...",
		Short: "Print the audit records that match all the filters given",
		Long: `Search streams audit log files (or standard input with "-") and prints the
matching records as JSON lines. Filters combine with AND:
  --since, --until     RFC 3339 times or durations back from now (2h, 7d)
  --principal          accessor, display name or token HMAC ('coffer audit hash TOKEN')
  --action             exact (kms:Decrypt) or a prefix ending in * (key:*)
  --resource           key id, alias or token accessor acted on
  --outcome            ok, error, or an error code (permission_denied)`,
		Example: `  coffer audit search --principal acc_3f1c9a0b2d4e6f8a1b2c3d4e --since 24h /var/lib/coffer/audit/*.jsonl
  coffer audit search --principal "$(printf %s "$LEAKED_TOKEN" | coffer audit hash -)" audit-*.jsonl`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			var err error
			if q.Since, err = parseWhen(since); err != nil {
				return usageErrorf("--since: %v", err)
			}
			if q.Until, err = parseWhen(until); err != nil {
				return usageErrorf("--until: %v", err)
			}
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<16)
			defer w.Flush()
			for _, name := range files {
				f := os.Stdin
				if name != "-" {
					if f, err = os.Open(name); err != nil {
						return err
					}
				}
				err = audit.Search(f, q, func(line []byte, _ *audit.Record) error {
					w.Write(line)
					return w.WriteByte('\n')
				})
				if name != "-" {
					f.Close()
				}
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "only records at or after this time")
	f.StringVar(&until, "until", "", "only records before this time")
	f.StringVar(&q.Principal, "principal", "", "accessor, name or token HMAC")
	f.StringVar(&q.Action, "action", "", "action, or prefix ending in *")
	f.StringVar(&q.Resource, "resource", "", "resource or key id")
	f.StringVar(&q.Outcome, "outcome", "", "ok, error or an error code")
	f.BoolVar(&q.Checkpoints, "checkpoints", false, "include checkpoint lines")
	return cmd
}

// parseWhen reads an RFC 3339 time or a duration back from now.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	var days int
	if _, err := fmt.Sscanf(s, "%dd", &days); err == nil && fmt.Sprintf("%dd", days) == s {
		return time.Now().Add(-time.Duration(days) * 24 * time.Hour), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 2h or 7d", s)
	}
	return time.Now().Add(-d), nil
}

func newAuditHashCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "hash VALUE",
		Short: "Print the HMAC under which the audit log records a token or context value",
		Long: `Hash prints HMAC-SHA256(audit key, VALUE) in hex: the form in which audit
records hold presented tokens (token_hmac) and encryption-context values.
Search for it to answer "was this token used?".

With --key-file it computes the HMAC offline from the audit key file;
otherwise the server computes it (POST /v1/sys/audit/hash, needs a token
allowed audit:Hash). Use "-" to read VALUE from standard input.`,
		Example: `  printf %s "$TOKEN" | coffer audit hash --key-file /var/lib/coffer/audit/audit.key -
  printf %s "$TOKEN" | coffer audit hash -`,
		Args: exactArgs(1, "VALUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v := args[0]
			if strings.HasPrefix(v, "cft_") || strings.HasPrefix(v, "cfsk_") {
				warnSecretArg(cmd, "the VALUE argument", `pipe it on standard input with "-" instead`)
			}
			if v == "-" {
				b, err := readAllLimited(cmd.InOrStdin(), 1<<20)
				if err != nil {
					return err
				}
				v = string(b)
			}
			var h string
			if keyFile != "" {
				k, err := audit.LoadKeys(keyFile)
				if err != nil {
					return err
				}
				h = k.HMAC(v)
			} else {
				c, err := newClient(cmd)
				if err != nil {
					return err
				}
				r, err := c.AuditHash(cmd.Context(), v)
				if err != nil {
					return err
				}
				h = r.HMAC
			}
			if wantJSON(cmd) {
				return printData(cmd, map[string]string{"hmac": h})
			}
			fmt.Fprintln(cmd.OutOrStdout(), h)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "audit key file (offline; default: ask the server)")
	return cmd
}

func newAuditPubkeyCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "pubkey",
		Short: "Print the Ed25519 public key that verifies audit checkpoints",
		Long: `Pubkey prints the audit checkpoint verification key in base64, from the
server (GET /v1/sys/audit/public-key, no token needed) or, with --key-file,
from the audit key file. Keep a copy off the server and pass it to
'coffer audit verify --pubkey'.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var pub string
			if keyFile != "" {
				k, err := audit.LoadKeys(keyFile)
				if err != nil {
					return err
				}
				pub = k.PublicKeyString()
			} else {
				c, err := newClient(cmd)
				if err != nil {
					return err
				}
				r, err := c.AuditPublicKey(cmd.Context())
				if err != nil {
					return err
				}
				pub = r.PublicKey
			}
			if wantJSON(cmd) {
				return printData(cmd, map[string]string{"public_key": pub, "algorithm": "ed25519"})
			}
			fmt.Fprintln(cmd.OutOrStdout(), pub)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "audit key file (offline; default: ask the server)")
	return cmd
}
