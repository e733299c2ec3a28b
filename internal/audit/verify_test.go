package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// copyLog copies the log files of dir into a new directory.
func copyLog(t *testing.T, dir string) []string {
	t.Helper()
	out := t.TempDir()
	var files []string
	for _, f := range mustFiles(t, dir) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		nf := filepath.Join(out, filepath.Base(f))
		if err := os.WriteFile(nf, b, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, nf)
	}
	return files
}

// rechain recomputes the prev hash of every line after index from, as a
// forger who edited line from would.
func rechain(t *testing.T, lines [][]byte, from int) {
	t.Helper()
	for i := from + 1; i < len(lines); i++ {
		h := sha256.Sum256(bytes.TrimSuffix(lines[i-1], []byte("\n")))
		j := bytes.Index(lines[i], headPrev)
		if j < 0 {
			t.Fatalf("line %d has no prev", i)
		}
		copy(lines[i][j+len(headPrev):], hex.EncodeToString(h[:]))
	}
}

// TestCheckpointSignatureCoversPrev: a record edited with every later prev
// recomputed keeps a valid chain; only the checkpoint signature, which
// covers the hash of the line before it, catches it.
func TestCheckpointSignatureCoversPrev(t *testing.T) {
	k := testKeys(t)
	dir := t.TempDir()
	writeLog(t, dir, k, 200, Options{CheckpointEvery: 50})
	files := copyLog(t, dir)
	lines, from := readLines(t, files)
	edit := -1
	for i, l := range lines {
		if i >= 60 && bytes.Contains(l, []byte(`"kms:Encrypt"`)) {
			edit = i
			break
		}
	}
	lines[edit] = bytes.Replace(lines[edit], []byte(`"kms:Encrypt"`), []byte(`"kms:Decrypt"`), 1)
	rechain(t, lines, edit)
	writeLines(t, files, lines, from)
	var want uint64
	for _, l := range lines[edit:] {
		if isCheckpoint(bytes.TrimSpace(l)) {
			want = seqOf(t, l)
			break
		}
	}
	res, err := Verify(files, VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Problem == nil || res.Problem.Kind != ProblemSignature || res.Problem.Seq != want {
		t.Fatalf("an edited record with a recomputed chain: got %+v, want a signature problem at the checkpoint seq %d", res.Problem, want)
	}
}
