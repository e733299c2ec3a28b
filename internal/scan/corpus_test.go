package scan

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Thresholds of the corpus test, stated in docs/scan.md.
const (
	minOverallPrecision = 0.95
	minOverallRecall    = 0.95
	minRulePrecision    = 0.90
	minRuleRecall       = 0.90
)

type corpusManifest struct {
	Version int `json:"version"`
	Files   map[string][]struct {
		Rule string `json:"rule"`
		Line int    `json:"line"`
	} `json:"files"`
}

// TestCorpus scans the labelled corpus and checks precision and recall per
// rule against the manifest.
func TestCorpus(t *testing.T) {
	root := filepath.Join("testdata", "corpus")
	raw, err := os.ReadFile(filepath.Join(root, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man corpusManifest
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	type counts struct{ tp, fp, fn int }
	per := map[string]*counts{}
	get := func(r string) *counts {
		if per[r] == nil {
			per[r] = &counts{}
		}
		return per[r]
	}
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "manifest.json" {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		seen[rel] = true
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		text := newGen(rel).expand(string(data))
		res := s.scanText(rel, []byte(text), true)
		want := map[string]bool{}
		for _, e := range man.Files[rel] {
			want[fmt.Sprintf("%s:%d", e.Rule, e.Line)] = true
		}
		for _, f := range res.findings {
			k := fmt.Sprintf("%s:%d", f.RuleID, f.Line)
			if want[k] {
				get(f.RuleID).tp++
				delete(want, k)
			} else {
				get(f.RuleID).fp++
				t.Logf("false positive: %s:%d %s", rel, f.Line, f.RuleID)
			}
		}
		for k := range want {
			rule, _, _ := strings.Cut(k, ":")
			get(rule).fn++
			t.Logf("missed: %s %s", rel, k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for f := range man.Files {
		if !seen[f] {
			t.Errorf("manifest names %s, which is not in the corpus", f)
		}
	}
	var tot counts
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range per {
			if !yield(id) {
				return
			}
		}
	})
	for _, id := range ids {
		c := per[id]
		tot.tp, tot.fp, tot.fn = tot.tp+c.tp, tot.fp+c.fp, tot.fn+c.fn
		p, r := ratio(c.tp, c.tp+c.fp), ratio(c.tp, c.tp+c.fn)
		t.Logf("%-32s tp=%d fp=%d fn=%d precision=%.2f recall=%.2f", id, c.tp, c.fp, c.fn, p, r)
		if p < minRulePrecision || r < minRuleRecall {
			t.Errorf("rule %s: precision %.2f recall %.2f below %.2f/%.2f", id, p, r, minRulePrecision, minRuleRecall)
		}
	}
	p, r := ratio(tot.tp, tot.tp+tot.fp), ratio(tot.tp, tot.tp+tot.fn)
	t.Logf("overall tp=%d fp=%d fn=%d precision=%.3f recall=%.3f", tot.tp, tot.fp, tot.fn, p, r)
	if p < minOverallPrecision || r < minOverallRecall {
		t.Errorf("overall precision %.3f recall %.3f below %.2f/%.2f", p, r, minOverallPrecision, minOverallRecall)
	}
	// Every rule that can fire on text must be exercised by the corpus.
	for _, rule := range s.Rules() {
		if rule.Path == nil && (per[rule.ID] == nil || per[rule.ID].tp == 0) {
			t.Errorf("rule %s has no true positive in the corpus", rule.ID)
		}
	}
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 1
	}
	return float64(a) / float64(b)
}
