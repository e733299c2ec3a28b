package scan

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	gitignore "github.com/sabhiram/go-gitignore"
)

// maxProblems bounds the problems kept in a Summary; the rest are counted.
const maxProblems = 100

// Summary counts what a scan looked at and what it skipped.
type Summary struct {
	Files          int      `json:"files"`
	Bytes          int64    `json:"bytes"`
	Commits        int      `json:"commits,omitempty"`
	SkippedBinary  int      `json:"skipped_binary"`
	SkippedLarge   int      `json:"skipped_too_large"`
	SkippedSymlink int      `json:"skipped_symlinks"`
	Unreadable     int      `json:"unreadable"`
	TruncatedLines int      `json:"truncated_lines"`
	YAMLErrors     int      `json:"unparsed_yaml"`
	Suppressed     int      `json:"suppressed_inline"`
	Baselined      int      `json:"suppressed_baseline"`
	Findings       int      `json:"findings"`
	Problems       []string `json:"problems,omitempty"`
	MoreProblems   int      `json:"more_problems,omitempty"`
	Seconds        float64  `json:"seconds"`
}

// Result is the outcome of a scan: findings sorted by path, line and rule.
type Result struct {
	Findings []Finding
	Summary  Summary
}

// collector gathers results from parallel workers.
type collector struct {
	mu  sync.Mutex
	s   *Scanner
	res Result
	t0  time.Time
}

func (s *Scanner) newCollector() *collector { return &collector{s: s, t0: time.Now()} }

func (c *collector) problem(format string, a ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.problemLocked(fmt.Sprintf(format, a...))
}

func (c *collector) problemLocked(p string) {
	if len(c.res.Summary.Problems) < maxProblems {
		c.res.Summary.Problems = append(c.res.Summary.Problems, p)
	} else {
		c.res.Summary.MoreProblems++
	}
}

// add records the result of scanning one text; amend fills in per-text
// detail (commit, author) on each finding.
func (c *collector) add(r scanResult, amend func(*Finding)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.Summary.Suppressed += r.suppressed
	c.res.Summary.YAMLErrors += r.yamlErrors
	for _, f := range r.findings {
		if amend != nil {
			amend(&f)
		}
		if c.s.opts.Baseline.Has(f.Fingerprint) {
			c.res.Summary.Baselined++
			continue
		}
		c.res.Findings = append(c.res.Findings, f)
	}
}

func (c *collector) count(fn func(*Summary)) {
	c.mu.Lock()
	fn(&c.res.Summary)
	c.mu.Unlock()
}

func (c *collector) result() *Result {
	slices.SortFunc(c.res.Findings, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column),
			cmp.Compare(a.RuleID, b.RuleID), cmp.Compare(a.Commit, b.Commit))
	})
	c.res.Summary.Findings = len(c.res.Findings)
	c.res.Summary.Seconds = time.Since(c.t0).Seconds()
	return &c.res
}

func (s *Scanner) workers() int {
	if s.opts.Workers > 0 {
		return s.opts.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// ScanPaths scans files and directories (recursively, honouring
// .gitignore files unless Options.NoIgnore). A path that does not exist is
// an error; unreadable files, symlinks, binary and oversized files are
// counted in the summary and skipped. Symbolic links are never followed
// inside a directory, so link loops cannot trap the walk.
func (s *Scanner) ScanPaths(ctx context.Context, paths []string) (*Result, error) {
	for _, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file or directory", p)
		}
	}
	c := s.newCollector()
	files := make(chan string, 256)
	var wg sync.WaitGroup
	for range s.workers() {
		wg.Go(func() {
			for p := range files {
				s.scanFile(c, p)
			}
		})
	}
	var err error
	for _, root := range paths {
		if err = s.walk(ctx, c, root, files); err != nil {
			break
		}
	}
	close(files)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	return c.result(), nil
}

// walk sends the files under root to files.
func (s *Scanner) walk(ctx context.Context, c *collector, root string, files chan<- string) error {
	info, err := os.Stat(root) // an explicitly named link is followed
	if err != nil {
		c.problem("%s: %v", root, err)
		c.count(func(sm *Summary) { sm.Unreadable++ })
		return nil
	}
	if !info.IsDir() {
		return send(ctx, files, root)
	}
	ignores := map[string]*gitignore.GitIgnore{}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			c.problem("%s: %v", p, err)
			c.count(func(sm *Summary) { sm.Unreadable++ })
			if d != nil && d.IsDir() && p != root {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			c.count(func(sm *Summary) { sm.SkippedSymlink++ })
			return nil
		}
		if d.IsDir() {
			if d.Name() == ".git" && p != root {
				return fs.SkipDir
			}
			if p != root && !s.opts.NoIgnore && ignored(ignores, root, p, true) {
				return fs.SkipDir
			}
			if !s.opts.NoIgnore {
				if gi, err := gitignore.CompileIgnoreFile(filepath.Join(p, ".gitignore")); err == nil {
					ignores[p] = gi
				}
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if !s.opts.NoIgnore && ignored(ignores, root, p, false) {
			return nil
		}
		if s.pathAllowed(filepath.ToSlash(p)) {
			return nil
		}
		return send(ctx, files, p)
	})
}

func send(ctx context.Context, files chan<- string, p string) error {
	select {
	case files <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ignored reports whether a .gitignore in a directory from root down to
// p's parent excludes p.
func ignored(ignores map[string]*gitignore.GitIgnore, root, p string, dir bool) bool {
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		if gi := ignores[d]; gi != nil {
			rel, err := filepath.Rel(d, p)
			if err == nil {
				rel = filepath.ToSlash(rel)
				if gi.MatchesPath(rel) || (dir && gi.MatchesPath(rel+"/")) {
					return true
				}
			}
		}
		if d == root || d == "." || d == filepath.Dir(d) || !strings.HasPrefix(d, root) {
			return false
		}
	}
}

// scanFile reads and scans one file, with the size and binary limits.
func (s *Scanner) scanFile(c *collector, p string) {
	name := filepath.ToSlash(p)
	f, err := os.Open(p)
	if err != nil {
		c.problem("%s: %v", name, err)
		c.count(func(sm *Summary) { sm.Unreadable++ })
		return
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, s.opts.MaxFileSize+1))
	if err != nil {
		c.problem("%s: %v", name, err)
		c.count(func(sm *Summary) { sm.Unreadable++ })
		return
	}
	if int64(len(data)) > s.opts.MaxFileSize {
		c.count(func(sm *Summary) { sm.SkippedLarge++ })
		c.add(scanResult{findings: s.finish(name, s.pathFindings(name))}, nil)
		return
	}
	if isBinary(data) {
		c.count(func(sm *Summary) { sm.SkippedBinary++ })
		c.add(scanResult{findings: s.finish(name, s.pathFindings(name))}, nil)
		return
	}
	r := s.scanText(name, data, true)
	c.count(func(sm *Summary) { sm.Files++; sm.Bytes += int64(len(data)) })
	c.add(r, nil)
}

func (s *Scanner) pathFindings(name string) []Finding {
	var fs []Finding
	for _, r := range s.pathRules {
		if r.Path.MatchString(name) {
			fs = append(fs, Finding{RuleID: r.ID, Line: 1, Secret: name, priority: r.priority})
		}
	}
	return fs
}

// isBinary reports whether data looks binary: a NUL byte in its first 8 KiB.
func isBinary(data []byte) bool {
	return bytes.IndexByte(data[:min(len(data), 8192)], 0) >= 0
}
