package scan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
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
	minFamilyPrecision  = 0.95
	minFamilyRecall     = 0.95
)

type corpusManifest struct {
	Version int                      `json:"version"`
	Files   map[string][]corpusEntry `json:"files"`
}

// corpusEntry is one expected finding: the rule and the 1-based line.
type corpusEntry struct {
	Rule string `json:"rule"`
	Line int    `json:"line"`
}

// loadCorpusManifests merges every manifest*.json in the corpus root (one
// per group of rules, so each can grow on its own). A file named by two
// manifests is an error: its expectations would be ambiguous.
func loadCorpusManifests(t *testing.T, root string) map[string][]corpusEntry {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "manifest*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifest in %s: %v", root, err)
	}
	files := map[string][]corpusEntry{}
	owner := map[string]string{}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var man corpusManifest
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&man); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for f, es := range man.Files {
			if prev, dup := owner[f]; dup {
				t.Errorf("%s is named by both %s and %s", f, prev, filepath.Base(p))
			}
			owner[f] = filepath.Base(p)
			files[f] = es
		}
	}
	return files
}

// corpusFamily is the family a corpus file belongs to: its top-level
// directory (config, kubeconfig, vendor, ...).
func corpusFamily(rel string) string {
	fam, _, _ := strings.Cut(rel, "/")
	return fam
}

// TestCorpus scans the labelled corpus and checks precision and recall per
// rule, per family (top-level directory) and overall against the
// manifests. Every corpus file must be listed (negatives with no
// findings), so a file cannot silently drop out of the count.
func TestCorpus(t *testing.T) {
	root := filepath.Join("testdata", "corpus")
	manifest := loadCorpusManifests(t, root)
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	type counts struct{ tp, fp, fn, files, negatives int }
	per, fams := map[string]*counts{}, map[string]*counts{}
	get := func(m map[string]*counts, k string) *counts {
		if m[k] == nil {
			m[k] = &counts{}
		}
		return m[k]
	}
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || isCorpusManifest(root, p) {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		seen[rel] = true
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		entries, listed := manifest[rel]
		if !listed {
			t.Errorf("%s is in the corpus but in no manifest (list negatives with [])", rel)
		}
		fam := get(fams, corpusFamily(rel))
		fam.files++
		if len(entries) == 0 {
			fam.negatives++
		}
		text := newGen(rel).expand(string(data))
		res := s.scanText(rel, []byte(text), true)
		want := map[string]bool{}
		for _, e := range entries {
			want[fmt.Sprintf("%s:%d", e.Rule, e.Line)] = true
		}
		for _, f := range res.findings {
			k := fmt.Sprintf("%s:%d", f.RuleID, f.Line)
			if want[k] {
				get(per, f.RuleID).tp++
				fam.tp++
				delete(want, k)
			} else {
				get(per, f.RuleID).fp++
				fam.fp++
				t.Logf("false positive: %s:%d %s", rel, f.Line, f.RuleID)
			}
		}
		for k := range want {
			rule, _, _ := strings.Cut(k, ":")
			get(per, rule).fn++
			fam.fn++
			t.Logf("missed: %s %s", rel, k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for f := range manifest {
		if !seen[f] {
			t.Errorf("manifest names %s, which is not in the corpus", f)
		}
	}
	var tot counts
	for _, id := range slices.Sorted(maps.Keys(per)) {
		c := per[id]
		tot.tp, tot.fp, tot.fn = tot.tp+c.tp, tot.fp+c.fp, tot.fn+c.fn
		p, r := ratio(c.tp, c.tp+c.fp), ratio(c.tp, c.tp+c.fn)
		t.Logf("%-32s tp=%d fp=%d fn=%d precision=%.2f recall=%.2f", id, c.tp, c.fp, c.fn, p, r)
		if p < minRulePrecision || r < minRuleRecall {
			t.Errorf("rule %s: precision %.2f recall %.2f below %.2f/%.2f", id, p, r, minRulePrecision, minRuleRecall)
		}
	}
	for _, fam := range slices.Sorted(maps.Keys(fams)) {
		c := fams[fam]
		p, r := ratio(c.tp, c.tp+c.fp), ratio(c.tp, c.tp+c.fn)
		t.Logf("family %-12s files=%d negative-files=%d tp=%d fp=%d fn=%d precision=%.3f recall=%.3f",
			fam, c.files, c.negatives, c.tp, c.fp, c.fn, p, r)
		if p < minFamilyPrecision || r < minFamilyRecall {
			t.Errorf("family %s: precision %.3f recall %.3f below %.2f/%.2f", fam, p, r, minFamilyPrecision, minFamilyRecall)
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

// isCorpusManifest reports whether p is one of the manifests in the corpus
// root (they label the corpus; they are not part of it).
func isCorpusManifest(root, p string) bool {
	ok, _ := filepath.Match(filepath.Join(root, "manifest*.json"), p)
	return ok
}
