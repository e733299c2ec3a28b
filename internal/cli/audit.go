package cli

import (
	"bufio"
	"crypto/ed25519"
	"fmt"
	"os"
	"slices"
	"strconv"
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
	var pubs, firstSeqs, replicas []string
	var openTail bool
	cmd := &cobra.Command{
		Use:   "verify [flags] DIR|FILE...",
		Short: "Check the hash chain, sequence and signed checkpoints of audit trails",
		Long: `Verify checks the audit trails in the directories and files given: the
files are grouped by the replica their names carry (audit-<replica>-<seq>.jsonl;
audit-<seq>.jsonl for a log written before replica ids) and each replica's
trail is verified as its own chain, in sequence order: sequence numbers
follow each other, every record carries the hash of the one before it and
names its replica, and every checkpoint is signed by the audit key.

For each trail it reports the first missing, altered, reordered, truncated
or foreign record (one of another replica's trail) by sequence number; it
exits 1 when any trail has a problem, 0 when all are intact. --replica
selects trails (repeatable), and reports a selected replica without files.
A trail must end with a checkpoint (the server writes one on rotation, every
N records, every few seconds and on shutdown); --allow-open-tail accepts
unsigned records at the end of a live trail.

A trail must also be complete at its head: it starts at seq 1, every file
(format 2 and later) begins with a signed start record and its checkpoints
name the first record of their file, so records removed from the head of a
file are reported. After older files were deleted on purpose (retention),
pass --first-seq with the first sequence number kept (the number in the
oldest file's name): N for every trail, REPLICA=N for one. Records a
restarted server found unsigned after the last checkpoint are listed as
inherited unverified. A log written before replica ids that a replica
continued is verified as the head of that replica's trail.

Without --pubkey, the key of each trail's first checkpoint is trusted, which
proves integrity but not origin: pin the key printed by 'coffer audit pubkey'
(KEY for every trail, REPLICA=KEY for a replica with its own audit key; KEY
is base64 or a file holding it).`,
		Example: `  coffer audit verify --pubkey "$(coffer audit pubkey)" /var/lib/coffer/audit
  coffer audit verify --replica coffer-0 --replica coffer-1 /mnt/audit-0 /mnt/audit-1
  coffer audit verify --pubkey coffer-1=/etc/coffer/coffer-1.pub --first-seq coffer-1=4001 /mnt/audit`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			opt := audit.TrailsOptions{AllowOpenTail: openTail, Replicas: replicas,
				PublicKeys: map[string]ed25519.PublicKey{}, FirstSeq: map[string]uint64{}}
			for _, r := range replicas {
				if err := audit.ValidateReplicaID(r); err != nil {
					return usageErrorf("--replica: %v", err)
				}
			}
			for _, p := range pubs {
				replica, k, err := parsePubkeyFlag(p)
				if err != nil {
					return usageErrorf("--pubkey: %v", err)
				}
				if replica == "" {
					opt.PublicKey = k
				} else {
					opt.PublicKeys[replica] = k
				}
			}
			for _, f := range firstSeqs {
				replica, n, err := parseFirstSeqFlag(f)
				if err != nil {
					return usageErrorf("--first-seq: %v", err)
				}
				if replica == "" {
					opt.DefaultFirstSeq = n
				} else {
					opt.FirstSeq[replica] = n
				}
			}
			start := time.Now()
			res, err := audit.VerifyTrails(paths, opt)
			if err != nil {
				return err
			}
			if len(res) == 0 {
				return fmt.Errorf("no audit log file (audit-*.jsonl) in %s", strings.Join(paths, ", "))
			}
			el := time.Since(start)
			var first *audit.Problem
			for _, r := range res {
				if first == nil && r.Problem != nil {
					first = r.Problem
				}
			}
			if wantJSON(cmd) {
				out := struct {
					OK      bool                  `json:"ok"`
					Problem *audit.Problem        `json:"problem"`
					Trails  []audit.ReplicaResult `json:"trails"`
				}{first == nil, first, res}
				if err := printData(cmd, out); err != nil {
					return err
				}
			} else {
				var total uint64
				for _, r := range res {
					total += r.Records + r.Checkpoints + r.Starts
				}
				for _, r := range res {
					printTrailResult(cmd, r, total, el)
				}
				if len(pubs) == 0 {
					for _, r := range res {
						if r.PublicKey != "" {
							fmt.Fprintf(cmd.ErrOrStderr(), "note: checkpoints%s were checked against the key they carry (%s); pass --pubkey to pin it\n", replicaSuffix(r.Replica), r.PublicKey)
						}
					}
				}
			}
			if first != nil {
				bad := 0
				for _, r := range res {
					if r.Problem != nil {
						bad++
					}
				}
				return &exitError{code: 1, err: fmt.Errorf("%d of %d audit trails failed the check; the first: %s", bad, len(res), describeProblem(first))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&pubs, "pubkey", nil, "trusted audit public key: `[REPLICA=]KEY` (base64, or a file holding it; repeatable)")
	f.BoolVar(&openTail, "allow-open-tail", false, "accept records after the last checkpoint (a trail still being written)")
	f.StringArrayVar(&firstSeqs, "first-seq", nil, "`[REPLICA=]N`: the sequence number a trail starts at after older files were removed on purpose (default 1; repeatable)")
	f.StringArrayVar(&replicas, "replica", nil, "verify only the trail of this replica `ID` (repeatable)")
	return cmd
}

// printTrailResult prints the outcome of one trail's verification.
func printTrailResult(cmd *cobra.Command, r audit.ReplicaResult, total uint64, el time.Duration) {
	w := cmd.OutOrStdout()
	prefix := ""
	if r.Replica != "" {
		prefix = "replica " + r.Replica + ": "
	}
	if r.Problem != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "%sFAILED: %s\n", prefix, describeProblem(r.Problem))
		return
	}
	fmt.Fprintf(w, "%sOK: %d records and %d checkpoints in %d files, seq %d..%d (%.0f records/s)\n",
		prefix, r.Records, r.Checkpoints, r.Files, r.FirstSeq, r.LastSeq, float64(total)/el.Seconds())
	if r.ContinuesLegacy {
		fmt.Fprintf(w, "%snote: the trail continues the log without replica id found beside it (its files were verified as the head of the chain)\n", prefix)
	}
	if r.UnsignedTail > 0 {
		fmt.Fprintf(w, "%snote: the last %d records follow the last checkpoint (seq %d) and are not signed yet\n", prefix, r.UnsignedTail, r.LastCheckpoint)
	}
	for _, u := range r.Unverified {
		fmt.Fprintf(w, "%snote: records %d..%d were found unsigned when the server reopened the log (start record seq %d): they chain, but no server vouched for them\n", prefix, u.From, u.To, u.At)
	}
}

// describeProblem says where a trail failed the check.
func describeProblem(p *audit.Problem) string {
	return fmt.Sprintf("audit log check failed%s at record seq %d (%s, %s line %d): %s", replicaSuffix(p.Replica), p.Seq, p.Kind, p.File, p.Line, p.Message)
}

func replicaSuffix(r string) string {
	if r == "" {
		return ""
	}
	return " (replica " + r + ")"
}

// parsePubkeyFlag reads [REPLICA=]KEY, KEY being base64 or a file holding
// it. A value that is a key or a file as a whole is one (base64 may end in
// '=').
func parsePubkeyFlag(v string) (string, ed25519.PublicKey, error) {
	key := func(s string) (ed25519.PublicKey, error) {
		if b, err := os.ReadFile(s); err == nil {
			s = string(b)
		}
		return audit.ParsePublicKey(s)
	}
	if k, err := key(v); err == nil {
		return "", k, nil
	}
	r, s, ok := strings.Cut(v, "=")
	if !ok || audit.ValidateReplicaID(r) != nil {
		_, err := key(v)
		return "", nil, err
	}
	k, err := key(s)
	if err != nil {
		return "", nil, fmt.Errorf("replica %s: %v", r, err)
	}
	return r, k, nil
}

// parseFirstSeqFlag reads [REPLICA=]N.
func parseFirstSeqFlag(v string) (string, uint64, error) {
	r, s, ok := strings.Cut(v, "=")
	if !ok {
		r, s = "", v
	} else if err := audit.ValidateReplicaID(r); err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("%q: want N or REPLICA=N, N a sequence number", v)
	}
	return r, n, nil
}

func newAuditSearchCmd() *cobra.Command {
	var q audit.Query
	var since, until string
	var window int
	cmd := &cobra.Command{
		Use:   "search [flags] DIR|FILE...|-",
		Short: "Print the audit records that match all the filters given, merged by time",
		Long: `Search streams audit trails (directories, log files, or standard input with
"-") and prints the matching records as JSON lines, merged by time across the
replicas' trails: records of equal time are ordered by replica id, then
sequence number. It reads the trails as streams and holds at most --window
matching records per trail (a trail is in commit order, which is time order
only nearly: a record's time is when its request began). Filters combine
with AND:
  --since, --until     RFC 3339 times or durations back from now (2h, 7d)
  --principal          accessor, display name or token HMAC ('coffer audit hash TOKEN')
  --action             exact (kms:Decrypt) or a prefix ending in * (key:*)
  --resource           key id, alias or token accessor acted on
  --outcome            ok, error, or an error code (permission_denied)
  --replica            records of this replica (repeatable)`,
		Example: `  coffer audit search --principal acc_3f1c9a0b2d4e6f8a1b2c3d4e --since 24h /var/lib/coffer/audit
  coffer audit search --action 'key:*' /mnt/audit-coffer-0 /mnt/audit-coffer-1
  coffer audit search --principal "$(printf %s "$LEAKED_TOKEN" | coffer audit hash -)" audit-*.jsonl`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			var err error
			if q.Since, err = parseWhen(since); err != nil {
				return usageErrorf("--since: %v", err)
			}
			if q.Until, err = parseWhen(until); err != nil {
				return usageErrorf("--until: %v", err)
			}
			for _, r := range q.Replicas {
				if err := audit.ValidateReplicaID(r); err != nil {
					return usageErrorf("--replica: %v", err)
				}
			}
			if window < 1 {
				return usageErrorf("--window: want at least 1")
			}
			var sources []audit.Source
			var files []string
			stdin := false
			for _, p := range paths {
				if p != "-" {
					files = append(files, p)
				} else if !stdin {
					stdin = true
					sources = append(sources, audit.Source{Reader: cmd.InOrStdin()})
				}
			}
			if len(files) > 0 {
				trails, err := audit.Trails(files)
				if err != nil {
					return err
				}
				for _, t := range trails {
					if len(q.Replicas) > 0 && t.Replica != "" && !slices.Contains(q.Replicas, t.Replica) {
						continue // none of its records can match
					}
					sources = append(sources, audit.Source{Replica: t.Replica, Files: t.Files})
				}
			}
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<16)
			defer w.Flush()
			return audit.SearchMerged(sources, q, window, func(line []byte, _ *audit.Record) error {
				w.Write(line)
				return w.WriteByte('\n')
			})
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
	f.StringArrayVar(&q.Replicas, "replica", nil, "only records of this replica `ID` (repeatable)")
	f.IntVar(&window, "window", audit.DefaultReorderWindow, "matching records held per trail to put it in time order")
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
