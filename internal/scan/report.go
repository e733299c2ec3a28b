package scan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// shown returns the secret as a report shows it.
func shown(f Finding, showSecrets bool) string {
	if showSecrets {
		return f.Secret
	}
	return Redacted(f.Secret)
}

// WriteHuman writes findings one per block, then a summary line.
func WriteHuman(w io.Writer, res *Result, showSecrets bool) error {
	for _, f := range res.Findings {
		fmt.Fprintf(w, "%s:%d: %s %s: %s\n", f.Path, f.Line, f.Severity, f.RuleID, f.Description)
		if f.Where != "" {
			fmt.Fprintf(w, "    in:     %s\n", f.Where)
		}
		if f.Commit != "" {
			fmt.Fprintf(w, "    commit: %s %s %s\n", f.Commit, f.Author, f.Date)
		}
		secret := shown(f, showSecrets)
		if showSecrets {
			secret = strings.ReplaceAll(secret, "\n", "\\n")
		}
		fmt.Fprintf(w, "    secret: %s\n", secret)
	}
	sm := res.Summary
	what := fmt.Sprintf("%d files", sm.Files)
	if sm.Commits > 0 {
		what = fmt.Sprintf("%d commits", sm.Commits)
	}
	_, err := fmt.Fprintf(w, "%d findings in %s (%s) in %.2fs; skipped: %d binary, %d too large, %d symlinks, %d unreadable; suppressed: %d inline, %d baseline\n",
		sm.Findings, what, mb(sm.Bytes), sm.Seconds, sm.SkippedBinary, sm.SkippedLarge, sm.SkippedSymlink, sm.Unreadable, sm.Suppressed, sm.Baselined)
	return err
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// jsonFinding is a Finding with its secret as the report shows it.
type jsonFinding struct {
	Finding
	Secret string `json:"secret"`
}

// WriteJSON writes {"findings": [...], "summary": {...}}.
func WriteJSON(w io.Writer, res *Result, showSecrets bool) error {
	out := struct {
		Findings []jsonFinding `json:"findings"`
		Summary  Summary       `json:"summary"`
	}{Findings: []jsonFinding{}, Summary: res.Summary}
	for _, f := range res.Findings {
		out.Findings = append(out.Findings, jsonFinding{f, shown(f, showSecrets)})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// SARIF 2.1.0, the subset code-scanning UIs read.
type (
	sarifLog struct {
		Schema  string     `json:"$schema"`
		Version string     `json:"version"`
		Runs    []sarifRun `json:"runs"`
	}
	sarifRun struct {
		Tool    sarifTool     `json:"tool"`
		Results []sarifResult `json:"results"`
	}
	sarifTool struct {
		Driver sarifDriver `json:"driver"`
	}
	sarifDriver struct {
		Name           string      `json:"name"`
		InformationURI string      `json:"informationUri"`
		Rules          []sarifRule `json:"rules"`
	}
	sarifRule struct {
		ID                   string       `json:"id"`
		ShortDescription     sarifText    `json:"shortDescription"`
		DefaultConfiguration sarifConfig  `json:"defaultConfiguration"`
		Properties           sarifRuleTag `json:"properties"`
	}
	sarifRuleTag struct {
		Tags     []string `json:"tags"`
		Severity string   `json:"security-severity"`
	}
	sarifConfig struct {
		Level string `json:"level"`
	}
	sarifText struct {
		Text string `json:"text"`
	}
	sarifResult struct {
		RuleID              string            `json:"ruleId"`
		RuleIndex           int               `json:"ruleIndex"`
		Level               string            `json:"level"`
		Message             sarifText         `json:"message"`
		Locations           []sarifLocation   `json:"locations"`
		PartialFingerprints map[string]string `json:"partialFingerprints"`
	}
	sarifLocation struct {
		PhysicalLocation sarifPhysical `json:"physicalLocation"`
	}
	sarifPhysical struct {
		ArtifactLocation sarifArtifact `json:"artifactLocation"`
		Region           sarifRegion   `json:"region"`
	}
	sarifArtifact struct {
		URI string `json:"uri"`
	}
	sarifRegion struct {
		StartLine   int `json:"startLine"`
		StartColumn int `json:"startColumn,omitempty"`
	}
)

func sarifLevel(s Severity) string {
	switch s {
	case Critical, High:
		return "error"
	case Medium:
		return "warning"
	}
	return "note"
}

func securitySeverity(s Severity) string {
	switch s {
	case Critical:
		return "9.5"
	case High:
		return "8.0"
	case Medium:
		return "5.5"
	}
	return "3.0"
}

// WriteSARIF writes a SARIF 2.1.0 log with one run listing every rule.
func WriteSARIF(w io.Writer, res *Result, rules []*Rule, showSecrets bool) error {
	drv := sarifDriver{Name: "coffer-scan", InformationURI: "https://github.com/cofferkms/coffer/blob/main/docs/scan.md"}
	index := map[string]int{}
	for i, r := range rules {
		index[r.ID] = i
		drv.Rules = append(drv.Rules, sarifRule{ID: r.ID, ShortDescription: sarifText{r.Description},
			DefaultConfiguration: sarifConfig{sarifLevel(r.Severity)},
			Properties:           sarifRuleTag{Tags: []string{"security", "secret"}, Severity: securitySeverity(r.Severity)}})
	}
	run := sarifRun{Tool: sarifTool{drv}, Results: []sarifResult{}}
	for _, f := range res.Findings {
		msg := fmt.Sprintf("%s: %s", f.Description, shown(f, showSecrets))
		if f.Where != "" {
			msg += " (" + f.Where + ")"
		}
		if f.Commit != "" {
			msg += " in commit " + f.Commit
		}
		run.Results = append(run.Results, sarifResult{
			RuleID: f.RuleID, RuleIndex: index[f.RuleID], Level: sarifLevel(f.Severity), Message: sarifText{msg},
			Locations:           []sarifLocation{{sarifPhysical{sarifArtifact{f.Path}, sarifRegion{max(f.Line, 1), f.Column}}}},
			PartialFingerprints: map[string]string{"cofferFingerprint/v1": f.Fingerprint},
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{Schema: "https://json.schemastore.org/sarif-2.1.0.json", Version: "2.1.0", Runs: []sarifRun{run}})
}
