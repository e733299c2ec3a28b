package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/cofferkms/coffer/client"
)

// outputFormat returns the output format chosen with -o (or the hidden
// --json), normalized: table (the default; "human" is its old name), json,
// yaml, or sarif where a command offers it.
func outputFormat(cmd *cobra.Command) string {
	if j, _ := cmd.Flags().GetBool(flagJSON); j {
		return outputJSON
	}
	out, _ := cmd.Flags().GetString(flagOutput)
	if out == outputHuman || out == "" {
		return outputTable
	}
	return out
}

// wantJSON reports whether a structured output was asked for: -o json or
// -o yaml. Commands then print their result with printData.
func wantJSON(cmd *cobra.Command) bool {
	switch outputFormat(cmd) {
	case outputJSON, outputYAML:
		return true
	}
	return false
}

// printJSON writes v as indented JSON followed by a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printData writes v on the command's standard output as JSON, or as YAML
// with -o yaml. Both have the same field names (snake_case, the JSON tags).
func printData(cmd *cobra.Command, v any) error {
	return writeData(cmd, func(w io.Writer) error { return printJSON(w, v) })
}

// writeData runs write, which writes one JSON document, and sends its
// output to the command's standard output: as it is, or converted to YAML
// with -o yaml (keeping the order of the fields).
func writeData(cmd *cobra.Command, write func(io.Writer) error) error {
	out := cmd.OutOrStdout()
	if outputFormat(cmd) != outputYAML {
		return write(out)
	}
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return err
	}
	y, err := jsonToYAML(buf.Bytes())
	if err != nil {
		return err
	}
	_, err = out.Write(y)
	return err
}

// jsonToYAML converts a JSON document to block-style YAML, keeping the
// order of object fields. JSON is YAML, so the YAML parser reads it; only
// its flow style is dropped.
func jsonToYAML(doc []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(doc, &n); err != nil {
		return nil, err
	}
	var unflow func(*yaml.Node)
	unflow = func(n *yaml.Node) {
		n.Style &^= yaml.FlowStyle
		if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
			// Keep strings that look like other types quoted.
			n.Style &^= yaml.DoubleQuotedStyle
		}
		for _, c := range n.Content {
			unflow(c)
		}
	}
	unflow(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// field is one line of a key: value listing.
type field struct {
	name, value string
}

// printFields writes fields as aligned "name: value" lines.
func printFields(w io.Writer, fields []field) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f.name, f.value)
	}
	return tw.Flush()
}

// printTable writes an aligned table with a header row.
func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// orDash returns s, or "-" when s is empty, so table cells never vanish.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fmtTime formats t as RFC 3339, or "-" for the zero time.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// fmtTimePtr formats an optional time.
func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

// fmtMap formats a map as "k=v, k2=v2", sorted by key, or "-" when empty.
func fmtMap(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// fmtList formats a list as "a, b", or "-" when empty.
func fmtList(l []string) string {
	if len(l) == 0 {
		return "-"
	}
	return strings.Join(l, ", ")
}

// printKey writes a key in the chosen format.
func printKey(cmd *cobra.Command, k *client.Key) error {
	w := cmd.OutOrStdout()
	if wantJSON(cmd) {
		return printData(cmd, k)
	}
	fields := []field{
		{"ID", k.ID},
		{"Aliases", fmtList(k.Aliases)},
		{"Description", orDash(k.Description)},
		{"State", string(k.State)},
		{"Created", fmtTime(k.CreatedAt)},
		{"Primary version", strconv.FormatUint(uint64(k.PrimaryVersion), 10)},
		{"Versions", strconv.Itoa(len(k.Versions))},
		{"Rotation period", orDash(k.RotationPeriod)},
		{"Last rotated", fmtTime(k.LastRotatedAt)},
		{"Next rotation", fmtTimePtr(k.NextRotationAt)},
	}
	if k.DeletionDate != nil {
		fields = append(fields, field{"Deletion date", fmtTimePtr(k.DeletionDate)})
	}
	fields = append(fields, field{"Tags", fmtMap(k.Tags)})
	return printFields(w, fields)
}

// printKeyList writes keys as a table, or JSON.
func printKeyList(cmd *cobra.Command, l *client.KeyList) error {
	w := cmd.OutOrStdout()
	if wantJSON(cmd) {
		if l.Keys == nil {
			l.Keys = []client.Key{}
		}
		return printData(cmd, l)
	}
	if len(l.Keys) == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "No keys.")
		return nil
	}
	rows := make([][]string, 0, len(l.Keys))
	for _, k := range l.Keys {
		rows = append(rows, []string{
			k.ID,
			fmtList(k.Aliases),
			string(k.State),
			strconv.FormatUint(uint64(k.PrimaryVersion), 10),
			orDash(k.RotationPeriod),
			fmtTime(k.CreatedAt),
			orDash(k.Description),
		})
	}
	return printTable(w, []string{"ID", "ALIASES", "STATE", "VERSION", "ROTATION", "CREATED", "DESCRIPTION"}, rows)
}

// printAliasList writes aliases as a table, or JSON.
func printAliasList(cmd *cobra.Command, l *client.AliasList) error {
	w := cmd.OutOrStdout()
	if wantJSON(cmd) {
		if l.Aliases == nil {
			l.Aliases = []client.Alias{}
		}
		return printData(cmd, l)
	}
	if len(l.Aliases) == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "No aliases.")
		return nil
	}
	rows := make([][]string, 0, len(l.Aliases))
	for _, a := range l.Aliases {
		rows = append(rows, []string{a.Name, a.KeyID})
	}
	return printTable(w, []string{"ALIAS", "KEY ID"}, rows)
}

// expires formats a token's expiry; nil means it never expires.
func expires(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return fmtTime(*t)
}

// printSealStatus writes the seal status in the chosen format.
func printSealStatus(cmd *cobra.Command, s *client.SealStatus) error {
	w := cmd.OutOrStdout()
	if wantJSON(cmd) {
		return printData(cmd, s)
	}
	fields := []field{
		{"Initialized", strconv.FormatBool(s.Initialized)},
		{"Sealed", strconv.FormatBool(s.Sealed)},
		{"Total shares", strconv.Itoa(s.Shares)},
		{"Threshold", strconv.Itoa(s.Threshold)},
	}
	if s.Sealed && s.Initialized {
		fields = append(fields, field{"Unseal progress", fmt.Sprintf("%d/%d", s.Progress, s.Threshold)})
	}
	fields = append(fields, field{"Version", orDash(s.Version)})
	return printFields(w, fields)
}
