package scan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// GitOptions choose what ScanGit reads.
type GitOptions struct {
	// Dir is the repository (any directory inside its work tree).
	Dir string
	// Staged scans the changes staged for commit instead of history.
	Staged bool
	// Since scans commits after REV up to HEAD (REV..HEAD).
	Since string
	// Range scans a revision range such as A..B.
	Range string
}

// commitMark starts each commit's header in the log format below.
const commitMark = "\x1eCOMMIT\x1f"

// gitJob is the added lines of one file in one commit.
type gitJob struct {
	commit, author, date, path string
	data                       []byte
	lines                      []int // line number in the file of each line in data
}

// ScanGit scans every line added in a repository's history (all refs by
// default), or in the staged changes. It streams `git log -p --unified=0`
// and scans each file's added lines of each commit as one text, in
// parallel; memory is bounded by the workers' queue and the line limit.
// Only the line rules apply: a diff is not a whole YAML document.
func (s *Scanner) ScanGit(ctx context.Context, g GitOptions) (*Result, error) {
	var args []string
	if g.Staged {
		args = []string{"diff", "--cached", "-U0", "--no-color", "--no-ext-diff", "--no-renames", "--no-textconv"}
	} else {
		args = []string{"log", "-p", "-U0", "--no-color", "--no-ext-diff", "--no-renames", "--no-textconv", "--full-history",
			"--format=" + commitMark + "%H\x1f%an <%ae>\x1f%aI"}
		switch {
		case g.Range != "":
			args = append(args, g.Range)
		case g.Since != "":
			args = append(args, g.Since+"..HEAD")
		default:
			args = append(args, "--all")
		}
		args = append(args, "--")
	}
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = g.Dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("git: %v", err)
	}

	c := s.newCollector()
	jobs := make(chan *gitJob, 2*s.workers())
	var wg sync.WaitGroup
	for range s.workers() {
		wg.Go(func() {
			for j := range jobs {
				res := s.scanText(j.path, j.data, false)
				c.add(res, func(f *Finding) {
					if f.Line >= 1 && f.Line <= len(j.lines) {
						f.Line = j.lines[f.Line-1]
					}
					f.Commit, f.Author, f.Date = j.commit, j.author, j.date
				})
			}
		})
	}
	perr := s.parseDiff(ctx, c, out, jobs)
	close(jobs)
	wg.Wait()
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if perr != nil {
		return nil, perr
	}
	if werr != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = werr.Error()
		}
		return nil, fmt.Errorf("git %s: %s", args[0], msg)
	}
	return c.result(), nil
}

// parseDiff reads git's patch output and queues each file's added lines.
func (s *Scanner) parseDiff(ctx context.Context, c *collector, r io.Reader, jobs chan<- *gitJob) error {
	lr := newLineReader(r, s.opts.MaxLineLen)
	var commit, author, date, path string
	var cur *gitJob
	inHunk := false
	next := 0
	commits := 0
	var bytesSeen int64
	flush := func() error {
		if cur != nil && len(cur.lines) > 0 {
			select {
			case jobs <- cur:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		cur = nil
		return nil
	}
	defer func() {
		c.count(func(sm *Summary) {
			sm.Commits += commits
			sm.Bytes += bytesSeen
			sm.TruncatedLines += lr.truncated
		})
	}()
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		bytesSeen += int64(len(line)) + 1
		switch {
		case bytes.HasPrefix(line, []byte(commitMark)):
			if err := flush(); err != nil {
				return err
			}
			f := strings.Split(string(line[len(commitMark):]), "\x1f")
			commit, author, date = f[0], "", ""
			if len(f) == 3 {
				author, date = f[1], f[2]
			}
			commits++
			path, inHunk = "", false
		case bytes.HasPrefix(line, []byte("diff --git ")):
			if err := flush(); err != nil {
				return err
			}
			path, inHunk = "", false
			c.count(func(sm *Summary) { sm.Files++ })
		case !inHunk && bytes.HasPrefix(line, []byte("+++ ")):
			path = diffPath(string(line[4:]))
		case bytes.HasPrefix(line, []byte("@@ ")):
			inHunk = true
			next = hunkStart(string(line))
		case inHunk && len(line) > 0 && line[0] == '+':
			if path == "" {
				continue
			}
			if cur == nil {
				cur = &gitJob{commit: commit, author: author, date: date, path: path}
			}
			cur.data = append(cur.data, line[1:]...)
			cur.data = append(cur.data, '\n')
			cur.lines = append(cur.lines, next)
			next++
			if len(cur.data) >= chunkSize {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// diffPath returns the path of a "+++ b/path" header, or "" for /dev/null.
func diffPath(p string) string {
	p = strings.TrimRight(p, "\t")
	if strings.HasPrefix(p, `"`) {
		if u, err := strconv.Unquote(p); err == nil {
			p = u
		}
	}
	if p == "/dev/null" {
		return ""
	}
	return strings.TrimPrefix(p, "b/")
}

// hunkStart returns the first new-file line of a "@@ -a,b +c,d @@" header.
func hunkStart(h string) int {
	i := strings.Index(h, " +")
	if i < 0 {
		return 1
	}
	rest := h[i+2:]
	end := strings.IndexAny(rest, ", ")
	if end < 0 {
		end = len(rest)
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return 1
	}
	return n
}
