package scan

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// unreadableDirEnv makes the test binary, run as a child, scan that
// directory and print its summary (see TestUnreadableFileReported).
const unreadableDirEnv = "COFFER_SCAN_UNREADABLE_DIR"

const summaryMark = "COFFER-SCAN-SUMMARY "

// TestUnreadableFileReported: a file the scanner may not open is counted
// and named in the summary, and the scan goes on. Root reads every file
// whatever its mode, and CI runs as root: then the scan runs in a child
// process (this test binary) with the credentials of nobody.
func TestUnreadableFileReported(t *testing.T) {
	if dir := os.Getenv(unreadableDirEnv); dir != "" {
		sm := scanSummary(t, dir)
		b, _ := json.Marshal(sm)
		os.Stdout.WriteString("\n" + summaryMark + string(b) + "\n")
		return
	}
	dir := worldDir(t)
	g := newGen("unreadable")
	secret := g.expand("GITHUB_TOKEN=@@R:ghp_:A62:36@@\n")
	write(t, filepath.Join(dir, "readable.txt"), secret)
	write(t, filepath.Join(dir, "unreadable.txt"), secret)
	if err := os.Chmod(filepath.Join(dir, "unreadable.txt"), 0); err != nil {
		t.Fatal(err)
	}
	var sm Summary
	if os.Geteuid() != 0 {
		sm = scanSummary(t, dir)
	} else {
		sm = scanAsNobody(t, dir)
	}
	if sm.Unreadable != 1 || sm.Files != 1 || sm.Findings != 1 {
		t.Fatalf("want 1 unreadable file, 1 scanned with 1 finding: %+v", sm)
	}
	if len(sm.Problems) != 1 || !strings.Contains(sm.Problems[0], "unreadable.txt") || !strings.Contains(sm.Problems[0], "permission denied") {
		t.Fatalf("the unreadable file is not named: %q", sm.Problems)
	}
}

func scanSummary(t *testing.T, dir string) Summary {
	t.Helper()
	s := newScanner(t, Options{})
	res, err := s.ScanPaths(context.Background(), []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	return res.Summary
}

// worldDir is a fresh directory any user may enter and list.
func worldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "coffer-scan-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// scanAsNobody runs this test in a copy of the test binary as uid/gid
// 65534, scanning dir, and returns the summary it prints.
func scanAsNobody(t *testing.T, dir string) Summary {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The go build directory is private to root: copy the binary out.
	bin := filepath.Join(worldDir(t), "scan.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err == nil {
		_, err = io.Copy(dst, src)
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
	}
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestUnreadableFileReported$", "-test.count=1")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), unreadableDirEnv+"="+dir, "GOCOVERDIR=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the unprivileged scan failed: %v\n%s", err, out)
	}
	i := bytes.Index(out, []byte(summaryMark))
	if i < 0 {
		t.Fatalf("no summary from the unprivileged scan:\n%s", out)
	}
	line, _, _ := bytes.Cut(out[i+len(summaryMark):], []byte("\n"))
	var sm Summary
	if err := json.Unmarshal(line, &sm); err != nil {
		t.Fatalf("summary %q: %v", line, err)
	}
	return sm
}
