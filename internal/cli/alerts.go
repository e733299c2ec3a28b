package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/monitor"
)

// newAlertsCmd builds `coffer alerts`.
func newAlertsCmd() *cobra.Command {
	cmd := groupCmd("alerts", "Test alert rules against recorded audit streams")
	cmd.AddCommand(newAlertsTestCmd())
	return cmd
}

func newAlertsTestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "test RULES.yaml < audit.jsonl",
		Short: "Replay an audit stream through alert rules and print the alerts",
		Long: `Test reads audit records (JSON lines, as the server writes them) from standard
input, evaluates the rules of RULES.yaml exactly as the server does (windows
run on the records' own times) and prints one alert per line. Responses
(revoke_token) are reported as "would revoke", never carried out, and no
sink is called. Use "-" or an empty file for the built-in defaults.
Rotation-overdue alerts need the live key list and are not replayed.`,
		Example: `  coffer alerts test - < /var/lib/coffer/audit/audit-00000000000000000001.jsonl
  coffer alerts test my-alerts.yaml < /var/lib/coffer/audit/audit-00000000000000000001.jsonl`,
		Args: exactArgs(1, "RULES.yaml"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rules := monitor.DefaultRules()
			if args[0] != "-" {
				r, err := monitor.LoadRules(args[0])
				if err != nil {
					return err
				}
				rules = r
			}
			e, err := monitor.NewEngine(rules, nil, nil, nil)
			if err != nil {
				return err
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			enc := json.NewEncoder(out)
			br := bufio.NewReaderSize(cmd.InOrStdin(), 1<<20)
			n, total := 0, 0
			for {
				line, err := br.ReadBytes('\n')
				if len(line) > 0 {
					n++
					var r audit.Record
					if jerr := json.Unmarshal(line, &r); jerr != nil {
						return fmt.Errorf("stdin line %d: not an audit record: %v", n, jerr)
					}
					for _, a := range e.Observe(cmd.Context(), &r) {
						total++
						if wantJSON(cmd) {
							enc.Encode(a)
						} else {
							fmt.Fprintf(out, "%s seq=%d %s [%s] %s", a.Time.Format("2006-01-02T15:04:05Z07:00"), a.Seq, a.Rule, a.Severity, a.Summary)
							if a.Response != "" {
								fmt.Fprintf(out, " (response: %s)", a.Response)
							}
							fmt.Fprintln(out)
						}
					}
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
			}
			out.Flush()
			fmt.Fprintf(cmd.ErrOrStderr(), "%d records, %d alerts\n", n, total)
			return nil
		},
	}
}

// readAllLimited reads at most limit bytes.
func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("input longer than %d bytes", limit)
	}
	return b, nil
}
