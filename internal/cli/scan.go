package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/scan"
)

// Exit codes of coffer scan, in the scheme of docs/cli.md: findings are
// the command's "no" answer (3); an error that stopped the scan is 1.
const (
	scanExitFindings = exitNo
	scanExitError    = exitCodeError
)

func newScanCmd() *cobra.Command {
	var (
		gitHistory, staged, noIgnore, showSecrets, listRules bool
		since, revRange, format, baselinePath, writeBaseline string
		configPath, reportTo                                 string
		maxFileSize                                          int64
		maxLineLen, workers                                  int
	)
	cmd := &cobra.Command{
		Use:   "scan [PATH...|-]",
		Short: "Find hard-coded secrets in files, manifests, Helm charts and git history",
		Long: `Scan files and directories (recursively, honouring .gitignore), standard
input (-), the lines added in a git history (--git) or the changes staged
for commit (--staged) for hard-coded secrets: cloud keys, Coffer tokens
(checked by their checksum), private keys, API tokens, database URLs with
passwords, and secrets in Kubernetes Secrets, ConfigMaps, env values and
Helm values. Values sealed by 'coffer seal' are never findings.

Secrets are redacted in every output unless --show-secrets is given. A line
with a "coffer:allow" comment is not reported; --write-baseline records the
current findings (as hashes of rule, path and secret) so that --baseline
reports only new ones.

With --report-to URL, the SHA-256 fingerprints (never the tokens) of the
Coffer tokens found are sent to that Coffer server, which revokes them and
raises an alert if one is used again.

Exit status: 0 no findings, 3 findings, 1 error, 2 usage error (see
docs/cli.md). -o sets the output: table (the default), json, yaml or sarif.
See docs/scan.md.`,
		Example: `  coffer scan .
  coffer scan --git --since origin/main
  git diff | coffer scan -
  coffer scan --staged                      # in a pre-commit hook
  coffer scan -o sarif . > scan.sarif
  coffer scan --write-baseline .coffer-scan-baseline.json .
  coffer scan --baseline .coffer-scan-baseline.json .`,
		Annotations: map[string]string{annotSARIF: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if format == "" {
				format = outputFormat(cmd)
			}
			switch format {
			case outputHuman:
				format = outputTable
			case outputTable, outputJSON, outputYAML, outputSARIF:
			default:
				return usageErrorf("invalid --format %q: use -o table, json, yaml or sarif", format)
			}
			if (since != "" || revRange != "") && !gitHistory {
				return usageErrorf("--since and --range need --git")
			}
			if since != "" && revRange != "" {
				return usageErrorf("--since and --range cannot be used together")
			}
			if gitHistory && staged {
				return usageErrorf("--git and --staged cannot be used together")
			}
			stdin := len(args) == 1 && args[0] == "-"
			if (gitHistory || staged) && len(args) > 1 {
				return usageErrorf("--git and --staged take at most one argument, the repository")
			}
			if !stdin && len(args) > 1 {
				for _, a := range args {
					if a == "-" {
						return usageErrorf("- (standard input) cannot be mixed with paths")
					}
				}
			}
			if maxFileSize < 0 || maxLineLen < 0 || workers < 0 {
				return usageErrorf("--max-file-size, --max-line-length and --workers must not be negative")
			}

			opts := scan.Options{MaxFileSize: maxFileSize, MaxLineLen: maxLineLen, Workers: workers, NoIgnore: noIgnore}
			if configPath != "" {
				c, err := scan.ReadConfig(configPath)
				if err != nil {
					return &exitError{code: scanExitError, err: err}
				}
				opts.Config = c
			}
			if baselinePath != "" {
				b, err := scan.ReadBaseline(baselinePath)
				if err != nil {
					return &exitError{code: scanExitError, err: err}
				}
				opts.Baseline = b
			}
			s, err := scan.New(opts)
			if err != nil {
				return &exitError{code: scanExitError, err: err}
			}
			out := cmd.OutOrStdout()
			if listRules {
				return printRules(cmd, s)
			}

			var res *scan.Result
			ctx := cmd.Context()
			switch {
			case gitHistory || staged:
				dir := "."
				if len(args) == 1 {
					dir = args[0]
				}
				res, err = s.ScanGit(ctx, scan.GitOptions{Dir: dir, Staged: staged, Since: since, Range: revRange})
			case stdin:
				res, err = s.ScanReader(ctx, cmd.InOrStdin(), "-")
			default:
				if len(args) == 0 {
					args = []string{"."}
				}
				res, err = s.ScanPaths(ctx, args)
			}
			if err != nil {
				return &exitError{code: scanExitError, err: err}
			}
			warnProblems(cmd.ErrOrStderr(), res.Summary)

			if writeBaseline != "" {
				if err := scan.NewBaseline(res.Findings).Write(writeBaseline); err != nil {
					return &exitError{code: scanExitError, err: err}
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Wrote %d fingerprints to %s.\n", len(res.Findings), writeBaseline)
				return nil
			}
			switch format {
			case outputJSON, outputYAML:
				err = writeData(cmd, func(w io.Writer) error { return scan.WriteJSON(w, res, showSecrets) })
			case outputSARIF:
				err = scan.WriteSARIF(out, res, s.Rules(), showSecrets)
			default:
				err = scan.WriteHuman(out, res, showSecrets)
			}
			if err != nil {
				return &exitError{code: scanExitError, err: err}
			}
			if reportTo != "" {
				if err := reportLeaked(cmd, reportTo, res.Findings); err != nil {
					return &exitError{code: scanExitError, err: err}
				}
			}
			if len(res.Findings) > 0 {
				return &exitError{code: scanExitFindings}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&gitHistory, "git", false, "scan the lines added in the git history of the repository (all refs by default)")
	f.StringVar(&since, "since", "", "with --git: scan only commits after `REV` (REV..HEAD)")
	f.StringVar(&revRange, "range", "", "with --git: scan the revision range `A..B`")
	f.BoolVar(&staged, "staged", false, "scan the changes staged for commit (for a pre-commit hook)")
	f.BoolVar(&noIgnore, "no-ignore", false, "scan files that .gitignore excludes")
	f.BoolVar(&showSecrets, "show-secrets", false, "print secrets in full instead of redacted")
	// --format is the old spelling of -o.
	f.StringVar(&format, "format", "", "same as -o: table, json, yaml or sarif")
	_ = f.MarkHidden("format")
	f.StringVar(&baselinePath, "baseline", "", "do not report findings whose fingerprints are in this baseline `FILE`")
	f.StringVar(&writeBaseline, "write-baseline", "", "write the fingerprints of the findings to `FILE` and exit 0")
	f.StringVar(&configPath, "config", "", "YAML `FILE` with custom rules, disabled rules and allowlists")
	f.Int64Var(&maxFileSize, "max-file-size", scan.DefaultMaxFileSize, "skip files larger than this many `BYTES`")
	f.IntVar(&maxLineLen, "max-line-length", scan.DefaultMaxLineLen, "in streams and history, cut lines longer than this many `BYTES`")
	f.IntVar(&workers, "workers", 0, "files scanned in parallel (default: number of CPUs)")
	f.BoolVar(&listRules, "list-rules", false, "list the rules and exit")
	f.StringVar(&reportTo, "report-to", "", "send the SHA-256 fingerprints of Coffer tokens and access key secrets found to the Coffer server at `URL` (COFFER_TOKEN authenticates), which revokes the tokens and disables the keys")
	return cmd
}

// warnProblems prints what the scan could not read.
func warnProblems(w io.Writer, sm scan.Summary) {
	for _, p := range sm.Problems {
		fmt.Fprintf(w, "coffer: warning: skipped %s\n", p)
	}
	if sm.MoreProblems > 0 {
		fmt.Fprintf(w, "coffer: warning: and %d more unreadable paths\n", sm.MoreProblems)
	}
	if sm.TruncatedLines > 0 {
		fmt.Fprintf(w, "coffer: warning: %d lines longer than --max-line-length were scanned only up to the limit\n", sm.TruncatedLines)
	}
}

func printRules(cmd *cobra.Command, s *scan.Scanner) error {
	out := cmd.OutOrStdout()
	if wantJSON(cmd) {
		type rule struct {
			ID          string        `json:"id"`
			Description string        `json:"description"`
			Severity    scan.Severity `json:"severity"`
		}
		rs := []rule{}
		for _, r := range s.Rules() {
			rs = append(rs, rule{r.ID, r.Description, r.Severity})
		}
		return printData(cmd, rs)
	}
	rows := [][]string{}
	for _, r := range s.Rules() {
		rows = append(rows, []string{r.ID, string(r.Severity), r.Description})
	}
	if err := printTable(out, []string{"RULE", "SEVERITY", "DESCRIPTION"}, rows); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "%d rules\n", len(rows))
	return err
}

// reportLeaked sends the fingerprints of the Coffer tokens among findings to
// the server at addr, which revokes them. Only SHA-256 hashes leave the
// machine.
func reportLeaked(cmd *cobra.Command, addr string, findings []scan.Finding) error {
	seen := map[string]bool{}
	var fps []string
	for _, f := range findings {
		if !reportedRules[f.RuleID] || f.Secret == "" {
			continue
		}
		sum := sha256.Sum256([]byte(f.Secret))
		fp := hex.EncodeToString(sum[:])
		if !seen[fp] {
			seen[fp] = true
			fps = append(fps, fp)
		}
	}
	if len(fps) == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "No Coffer tokens or access key secrets found; nothing reported.")
		return nil
	}
	if err := cmd.Flags().Set("address", addr); err != nil {
		return err
	}
	c, err := newClient(cmd)
	if err != nil {
		return err
	}
	var revoked, already, unknown int
	for start := 0; start < len(fps); start += 1000 {
		batch := fps[start:min(start+1000, len(fps))]
		rep, err := c.ReportLeakedTokens(cmd.Context(), client.ReportLeakedRequest{Fingerprints: batch})
		if err != nil {
			return fmt.Errorf("reporting %d Coffer credential(s) to %s: %w", len(fps), addr, err)
		}
		revoked, already, unknown = revoked+len(rep.Revoked), already+rep.AlreadyRevoked, unknown+rep.Unknown
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "Reported %d Coffer credential(s) to %s: %d revoked, %d already revoked, %d not issued by that server.\n",
		len(fps), addr, revoked, already, unknown)
	return nil
}

// reportedRules are the scanner rules whose findings --report-to sends:
// Coffer tokens (revoked) and access key secrets (the key is disabled).
var reportedRules = map[string]bool{"coffer-token": true, "coffer-access-key-secret": true}
