package scan

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newScanner(t *testing.T, o Options) *Scanner {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func rules(fs []Finding) string {
	var ids []string
	for _, f := range fs {
		ids = append(ids, f.RuleID)
	}
	return strings.Join(ids, ",")
}

// TestBadInput: junk is counted and skipped, never a crash or a hang.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	g := newGen("bad")
	secret := g.expand("GITHUB_TOKEN=@@R:ghp_:A62:36@@\n")
	write(t, filepath.Join(dir, "binary.bin"), "\x00\x01\x02"+secret)
	write(t, filepath.Join(dir, "latin1.txt"), "caf\xe9 \xff\xfe "+secret)
	write(t, filepath.Join(dir, "big.txt"), strings.Repeat("a", 2048)+secret)
	write(t, filepath.Join(dir, "deep.yaml"), strings.Repeat("[", 200000)+"\n"+secret)
	write(t, filepath.Join(dir, "broken.yaml"), "kind: Secret\ndata: [unclosed\n  : : :\n"+secret)
	if err := os.Symlink(dir, filepath.Join(dir, "loop")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("self", filepath.Join(dir, "self")); err != nil {
		t.Fatal(err)
	}
	s := newScanner(t, Options{MaxFileSize: 1024})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.ScanPaths(ctx, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	sm := res.Summary
	if sm.SkippedBinary != 1 || sm.SkippedLarge != 2 || sm.SkippedSymlink != 2 {
		t.Errorf("summary %+v", sm)
	}
	// Unreadable files: TestUnreadableFileReported (as root too).
	// latin1.txt and broken.yaml are scanned; deep.yaml is over the limit.
	got := map[string]bool{}
	for _, f := range res.Findings {
		got[filepath.Base(f.Path)] = true
	}
	for _, want := range []string{"latin1.txt", "broken.yaml"} {
		if !got[want] {
			t.Errorf("no finding in %s: %+v", want, res.Findings)
		}
	}
	// A deeply nested document within the size limit parses quickly or fails.
	s2 := newScanner(t, Options{})
	start := time.Now()
	r := s2.scanText("deep.yaml", []byte(strings.Repeat("- ", 20000)+"x\n"+strings.Repeat("{a: ", 20000)+"\n"+secret), true)
	if time.Since(start) > 5*time.Second || rules(r.findings) != "github-pat" {
		t.Errorf("deep yaml: %v %s", time.Since(start), rules(r.findings))
	}
}

// TestBoundedLines: a stream's overlong line is cut at the limit and
// counted, and scanning goes on after it.
func TestBoundedLines(t *testing.T) {
	g := newGen("lines")
	tok := g.expand("@@R:ghp_:A62:36@@")
	in := "x=" + tok + " " + strings.Repeat("b", 5000) + "\n" + strings.Repeat("c", 100000) + tok + "\nnext " + tok + "\n"
	s := newScanner(t, Options{MaxLineLen: 4096})
	res, err := s.ScanReader(context.Background(), strings.NewReader(in), "-")
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.TruncatedLines != 2 {
		t.Errorf("truncated %d, want 2", res.Summary.TruncatedLines)
	}
	if len(res.Findings) != 2 || res.Findings[0].Line != 1 || res.Findings[1].Line != 3 {
		t.Errorf("findings %+v", res.Findings)
	}
	lr := newLineReader(strings.NewReader(strings.Repeat("z", 1<<20)), 100)
	l, err := lr.next()
	if err != nil || len(l) != 100 || cap(lr.buf) > 1<<17 {
		t.Errorf("line %d err %v cap %d", len(l), err, cap(lr.buf))
	}
}

func TestSuppressionAndBaseline(t *testing.T) {
	dir := t.TempDir()
	g := newGen("supp")
	a, b := g.expand("@@R:ghp_:A62:36@@"), g.expand("@@R:npm_:A62:36@@")
	write(t, filepath.Join(dir, "a.env"), "A="+a+" # coffer:allow\nB="+b+"\n")
	s := newScanner(t, Options{})
	res, err := s.ScanPaths(context.Background(), []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if rules(res.Findings) != "npm-token" || res.Summary.Suppressed != 1 {
		t.Fatalf("findings %s suppressed %d", rules(res.Findings), res.Summary.Suppressed)
	}
	bl := NewBaseline(res.Findings)
	blPath := filepath.Join(dir, "baseline.json")
	if err := bl.Write(blPath); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(blPath)
	if bytes.Contains(raw, []byte(b)) || bytes.Contains(raw, []byte("npm_")) {
		t.Fatal("baseline holds plaintext")
	}
	// Moving the secret to another line keeps it suppressed; a new one is reported.
	write(t, filepath.Join(dir, "a.env"), "\n\n# moved\nB="+b+"\nC="+g.expand("@@R:ghp_:A62:36@@")+"\n")
	read, err := ReadBaseline(blPath)
	if err != nil {
		t.Fatal(err)
	}
	s = newScanner(t, Options{Baseline: read})
	res, err = s.ScanPaths(context.Background(), []string{filepath.Join(dir, "a.env")})
	if err != nil {
		t.Fatal(err)
	}
	if rules(res.Findings) != "github-pat" || res.Summary.Baselined != 1 {
		t.Fatalf("after move: %s baselined %d", rules(res.Findings), res.Summary.Baselined)
	}
}

func TestGitignoreAndConfig(t *testing.T) {
	dir := t.TempDir()
	g := newGen("ign")
	tok := g.expand("GH=@@R:ghp_:A62:36@@\n")
	write(t, filepath.Join(dir, ".gitignore"), "build/\n*.log\n")
	write(t, filepath.Join(dir, "build/out.txt"), tok)
	write(t, filepath.Join(dir, "x.log"), tok)
	write(t, filepath.Join(dir, "src/a.txt"), tok+"ACME=acme_"+strings.Repeat("ab12", 8)+"\n")
	write(t, filepath.Join(dir, "vendor/v.txt"), tok)
	cfgPath := filepath.Join(dir, "cfg.yaml")
	write(t, cfgPath, "rules:\n- id: acme-token\n  regex: 'acme_[a-z0-9]{32}'\n  keywords: [acme_]\nallowlist:\n  paths: ['/vendor/']\n")
	cfg, err := ReadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := newScanner(t, Options{Config: cfg}).ScanPaths(context.Background(), []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := rules(res.Findings); got != "github-pat,acme-token" {
		t.Errorf("findings %s", got)
	}
	res, _ = newScanner(t, Options{NoIgnore: true}).ScanPaths(context.Background(), []string{dir})
	if len(res.Findings) != 4 {
		t.Errorf("--no-ignore findings %d, want 4", len(res.Findings))
	}
	write(t, cfgPath, "rules:\n- id: x\n  regex: '('\n  keywords: [x]\n")
	cfg, _ = ReadConfig(cfgPath)
	if _, err := New(Options{Config: cfg}); err == nil {
		t.Error("bad regex accepted")
	}
}

func TestReports(t *testing.T) {
	g := newGen("rep")
	tok := g.expand("@@R:ghp_:A62:36@@")
	s := newScanner(t, Options{})
	res, _ := s.ScanReader(context.Background(), strings.NewReader("t="+tok+"\n"), "-")
	for name, w := range map[string]func(*bytes.Buffer, bool) error{
		"human": func(b *bytes.Buffer, show bool) error { return WriteHuman(b, res, show) },
		"json":  func(b *bytes.Buffer, show bool) error { return WriteJSON(b, res, show) },
		"sarif": func(b *bytes.Buffer, show bool) error { return WriteSARIF(b, res, s.Rules(), show) },
	} {
		var hidden, shownBuf bytes.Buffer
		if w(&hidden, false) != nil || w(&shownBuf, true) != nil {
			t.Fatal(name)
		}
		if strings.Contains(hidden.String(), tok) || !strings.Contains(hidden.String(), "ghp_") && name != "human" {
			t.Errorf("%s: secret not redacted:\n%s", name, hidden.String())
		}
		if !strings.Contains(shownBuf.String(), tok) {
			t.Errorf("%s: --show-secrets does not show the secret", name)
		}
	}
	var b bytes.Buffer
	_ = WriteSARIF(&b, res, s.Rules(), false)
	var log struct {
		Version string
		Runs    []struct {
			Tool struct {
				Driver struct{ Rules []struct{ ID string } }
			}
			Results []struct {
				RuleID    string
				RuleIndex int
				Locations []struct {
					PhysicalLocation struct{ Region struct{ StartLine int } }
				}
			}
		}
	}
	if err := json.Unmarshal(b.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	run := log.Runs[0]
	if log.Version != "2.1.0" || len(run.Results) != 1 || run.Tool.Driver.Rules[run.Results[0].RuleIndex].ID != "github-pat" ||
		run.Results[0].Locations[0].PhysicalLocation.Region.StartLine != 1 {
		t.Errorf("sarif: %s", b.String())
	}
}

func TestGitHistory(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("COFFER_E2E") == "" {
			t.Skip("git not installed")
		}
		t.Fatal(err)
	}
	dir := t.TempDir()
	gitc := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Dev", "GIT_AUTHOR_EMAIL=dev@example.com", "GIT_COMMITTER_NAME=Dev",
			"GIT_COMMITTER_EMAIL=dev@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	g := newGen("git")
	tok := g.expand("@@R:ghp_:A62:36@@")
	gitc("init", "-q", "-b", "main")
	write(t, filepath.Join(dir, "app.env"), "A=1\nB=2\n")
	gitc("add", ".")
	gitc("commit", "-qm", "one")
	write(t, filepath.Join(dir, "app.env"), "A=1\nB=2\nTOKEN="+tok+"\n")
	gitc("commit", "-qam", "leak")
	write(t, filepath.Join(dir, "app.env"), "A=1\nB=2\n")
	gitc("commit", "-qam", "remove")
	s := newScanner(t, Options{})
	res, err := s.ScanGit(context.Background(), GitOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Findings) != 1 || res.Summary.Commits != 3 {
		t.Fatalf("findings %+v commits %d", res.Findings, res.Summary.Commits)
	}
	f := res.Findings[0]
	if f.Path != "app.env" || f.Line != 3 || f.Author != "Dev <dev@example.com>" || len(f.Commit) != 40 {
		t.Errorf("finding %+v", f)
	}
	res, _ = s.ScanGit(context.Background(), GitOptions{Dir: dir, Since: "HEAD~1"})
	if len(res.Findings) != 0 {
		t.Errorf("--since HEAD~1: %+v", res.Findings)
	}
	write(t, filepath.Join(dir, "new.env"), "\n"+g.expand("K=@@R:npm_:A62:36@@")+"\n")
	gitc("add", "new.env")
	res, err = s.ScanGit(context.Background(), GitOptions{Dir: dir, Staged: true})
	if err != nil || rules(res.Findings) != "npm-token" || res.Findings[0].Line != 2 {
		t.Errorf("staged: %v %+v", err, res.Findings)
	}
	if _, err := s.ScanGit(context.Background(), GitOptions{Dir: dir, Range: "nope..HEAD"}); err == nil {
		t.Error("bad range accepted")
	}
}

func TestDiffParsing(t *testing.T) {
	if hunkStart("@@ -1,2 +7,3 @@ func") != 7 || hunkStart("@@ -0,0 +1 @@") != 1 {
		t.Error("hunkStart")
	}
	if diffPath("b/a b.txt") != "a b.txt" || diffPath("/dev/null") != "" || diffPath(`"b/caf\303\251"`) != "café" {
		t.Error("diffPath")
	}
}

func BenchmarkScanText(b *testing.B) {
	s, _ := New(Options{})
	data := bytes.Repeat([]byte("func main() { fmt.Println(\"hello, world\", x+y) } // a comment line of code\n"), 10000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		s.scanText("x.go", data, true)
	}
}

// FuzzScanText: any input is scanned without a panic, and findings point
// at lines that exist.
func FuzzScanText(f *testing.F) {
	f.Add([]byte("password = \"Zx9!kLm2#pQr7\"\n"), true)
	f.Add([]byte("apiVersion: v1\nkind: Secret\ndata:\n  a: {{ x }}\n---\nkind: List\nitems: [{kind: Pod}]\n"), true)
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\n"), false)
	s, _ := New(Options{})
	f.Fuzz(func(t *testing.T, data []byte, yaml bool) {
		lines := bytes.Count(data, []byte{'\n'}) + 1
		for _, fd := range s.scanText("f.yaml", data, yaml).findings {
			if fd.Line < 1 || fd.Line > lines {
				t.Fatalf("line %d of %d", fd.Line, lines)
			}
		}
	})
}

// TestLongLineManyKeywords: a minified file is one long line with a
// keyword hit every few bytes ({key:"..."} in a bundle). Finding the line
// of each hit must not scan back over the line per hit (quadratic: a 4 MB
// bundle took minutes), and the secrets on and after it keep their lines.
func TestLongLineManyKeywords(t *testing.T) {
	g := newGen("minified")
	tok := g.expand("@@R:ghp_:A62:36@@")
	in := "a\n" + strings.Repeat(`{key:"ab"},`, 400000) + `t="` + tok + `"` + "\nnext " + tok + "\n"
	s := newScanner(t, Options{})
	start := time.Now()
	res := s.scanText("bundle.min.js", []byte(in), false)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a %d MB line took %v", len(in)>>20, d)
	}
	if len(res.findings) != 2 || res.findings[0].Line != 2 || res.findings[1].Line != 3 {
		t.Errorf("findings %+v", res.findings)
	}
}
