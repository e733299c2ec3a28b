package rbac

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// WriteTable writes the report for people: findings grouped by subject,
// the subject with the worst finding first, each finding with the chains
// that grant it. System findings follow in their own section when the
// report keeps them apart.
func WriteTable(w io.Writer, rep *Report) error {
	bw := &errWriter{w: w}
	if len(rep.Findings) == 0 {
		bw.printf("No findings.\n")
	} else {
		writeGroups(bw, rep.Findings)
	}
	if len(rep.System) > 0 {
		bw.printf("\n%d finding(s) about system subjects and bootstrap bindings are not shown (--include-system shows them).\n", len(rep.System))
	}
	for _, n := range rep.Notes {
		bw.printf("note: %s\n", n)
	}
	return bw.err
}

func writeGroups(bw *errWriter, fs []Finding) {
	// Findings are sorted worst first, so the first appearance of a
	// subject orders the groups worst first.
	var order []string
	groups := map[string][]Finding{}
	for _, f := range fs {
		k := SubjectKey(f.Subject)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], f)
	}
	for i, k := range order {
		if i > 0 {
			bw.printf("\n")
		}
		g := groups[k]
		bw.printf("%s\n", SubjectString(g[0].Subject))
		for _, f := range g {
			bw.printf("  %-8s  %-28s  %s\n", strings.ToUpper(f.Severity.String()), f.Check, findingDetail(&f))
			for _, c := range f.Chains {
				bw.printf("      via %s\n", c)
			}
			for _, o := range f.Objects {
				bw.printf("      %s\n", o)
			}
		}
	}
}

// findingDetail is the one-line description of a finding.
func findingDetail(f *Finding) string {
	var b strings.Builder
	b.WriteString(f.Title)
	if len(f.Verbs) > 0 {
		fmt.Fprintf(&b, ": %s on %s", strings.Join(f.Verbs, ","), strings.Join(f.Resources, ","))
	}
	if len(f.ResourceNames) > 0 {
		fmt.Fprintf(&b, " limited to names %s", strings.Join(f.ResourceNames, ","))
	}
	b.WriteString(" (" + f.Scope() + ")")
	return b.String()
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, a ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, a...)
	}
}

// SARIF 2.1.0, the subset code-scanning tools read.
type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool    sarifTool     `json:"tool"`
	Results []sarifResult `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	InformationURI string      `json:"informationUri,omitempty"`
	Rules          []sarifRule `json:"rules"`
}

type sarifRule struct {
	ID               string         `json:"id"`
	ShortDescription sarifText      `json:"shortDescription"`
	FullDescription  sarifText      `json:"fullDescription"`
	Help             sarifText      `json:"help"`
	Properties       map[string]any `json:"properties,omitempty"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifResult struct {
	RuleID     string          `json:"ruleId"`
	Level      string          `json:"level"`
	Message    sarifText       `json:"message"`
	Locations  []sarifLocation `json:"locations,omitempty"`
	Properties map[string]any  `json:"properties,omitempty"`
}

type sarifLocation struct {
	LogicalLocations []sarifLogical `json:"logicalLocations"`
}

type sarifLogical struct {
	Name               string `json:"name"`
	FullyQualifiedName string `json:"fullyQualifiedName"`
	Kind               string `json:"kind"`
}

// sarifLevel maps a severity to a SARIF level.
func sarifLevel(s Severity) string {
	switch {
	case s >= SeverityHigh:
		return "error"
	case s == SeverityMedium:
		return "warning"
	}
	return "note"
}

// WriteSARIF writes the report's findings (not the system ones kept
// apart) as a SARIF 2.1.0 log. Each result's logical locations are the
// bindings of its chains, or the objects of a hygiene finding.
func WriteSARIF(w io.Writer, rep *Report, version string) error {
	driver := sarifDriver{Name: "coffer rbac", InformationURI: "https://github.com/cofferkms/coffer/blob/main/docs/rbac.md"}
	if version != "" {
		driver.Name = "coffer rbac " + version
	}
	for _, c := range Checks {
		driver.Rules = append(driver.Rules, sarifRule{
			ID: c.ID, ShortDescription: sarifText{c.Title}, FullDescription: sarifText{c.Why},
			Help: sarifText{c.Fix}, Properties: map[string]any{"category": c.Category},
		})
	}
	bw := bufio.NewWriterSize(w, 64*1024)
	head, err := json.MarshalIndent(sarifLog{
		Schema:  "https://json.schemastore.org/sarif-2.1.0.json",
		Version: "2.1.0",
		Runs:    []sarifRun{{Tool: sarifTool{Driver: driver}, Results: []sarifResult{}}},
	}, "", "  ")
	if err != nil {
		return err
	}
	// Stream the results into the empty array of the marshalled log.
	const hole = `"results": []`
	i := strings.LastIndex(string(head), hole)
	bw.Write(head[:i+len(hole)-1])
	results := make([]sarifResult, 1)
	for k := range rep.Findings {
		results[0] = sarifResultOf(&rep.Findings[k])
		b, err := json.MarshalIndent(&results[0], "        ", "  ")
		if err != nil {
			return err
		}
		if k > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n        ")
		bw.Write(b)
	}
	if len(rep.Findings) > 0 {
		bw.WriteString("\n      ")
	}
	bw.Write(head[i+len(hole)-1:])
	bw.WriteString("\n")
	return bw.Flush()
}

// sarifResultOf converts a finding to a SARIF result.
func sarifResultOf(f *Finding) sarifResult {
	msg := SubjectString(f.Subject) + " " + findingDetail(f)
	r := sarifResult{RuleID: f.Check, Level: sarifLevel(f.Severity), Message: sarifText{msg},
		Properties: map[string]any{"severity": f.Severity.String(), "subject": f.Subject, "namespace": f.Namespace}}
	var names []string
	for _, c := range f.Chains {
		names = append(names, c.Binding.String())
	}
	names = append(names, f.Objects...)
	slices.Sort(names)
	var loc sarifLocation
	for _, n := range slices.Compact(names) {
		loc.LogicalLocations = append(loc.LogicalLocations, sarifLogical{Name: n, FullyQualifiedName: n, Kind: "resource"})
	}
	if len(loc.LogicalLocations) > 0 {
		r.Locations = []sarifLocation{loc}
	}
	if len(f.Chains) > 0 {
		var cs []string
		for _, c := range f.Chains {
			cs = append(cs, c.String())
		}
		r.Properties["chains"] = cs
	}
	return r
}

// WriteJSON writes the report as indented JSON, one finding at a time, so
// that a large report is never held in memory twice.
func WriteJSON(w io.Writer, rep *Report) error {
	bw := bufio.NewWriterSize(w, 64*1024)
	bw.WriteString("{\n  \"findings\": ")
	if err := writeArray(bw, rep.Findings, "  "); err != nil {
		return err
	}
	bw.WriteString(",\n  \"system\": ")
	if err := writeArray(bw, rep.System, "  "); err != nil {
		return err
	}
	if len(rep.Notes) > 0 {
		b, err := json.Marshal(rep.Notes)
		if err != nil {
			return err
		}
		bw.WriteString(",\n  \"notes\": ")
		bw.Write(b)
	}
	bw.WriteString("\n}\n")
	return bw.Flush()
}

// writeArray writes xs as an indented JSON array, element by element.
func writeArray[T any](bw *bufio.Writer, xs []T, indent string) error {
	if len(xs) == 0 {
		_, err := bw.WriteString("[]")
		return err
	}
	bw.WriteString("[")
	for i := range xs {
		b, err := json.MarshalIndent(&xs[i], indent+"  ", "  ")
		if err != nil {
			return err
		}
		if i > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n" + indent + "  ")
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	_, err := bw.WriteString("\n" + indent + "]")
	return err
}
