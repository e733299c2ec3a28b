package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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

// dropHead removes the first n lines of file k of a copied log.
func dropHead(t *testing.T, files []string, k, n int) {
	t.Helper()
	b, err := os.ReadFile(files[k])
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		_, b, _ = bytes.Cut(b, []byte("\n"))
	}
	if err := os.WriteFile(files[k], b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func firstSeqOf(t *testing.T, name string) uint64 {
	t.Helper()
	s, err := firstSeq(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHeadTruncationDetected: records removed from the head of the log —
// the oldest files, or the first lines of the oldest file given — are
// reported, also when the verifier is told a later first sequence number.
func TestHeadTruncationDetected(t *testing.T) {
	k := testKeys(t)
	base := t.TempDir()
	writeLog(t, base, k, 400, Options{MaxFileSize: 16 << 10, CheckpointEvery: 64})
	if n := len(mustFiles(t, base)); n < 3 {
		t.Fatalf("want several files, got %d", n)
	}
	verify := func(files []string, first uint64) *Problem {
		t.Helper()
		res, err := Verify(files, VerifyOptions{PublicKey: k.PublicKey(), FirstSeq: first})
		if err != nil {
			t.Fatal(err)
		}
		return res.Problem
	}
	want := func(p *Problem, seq uint64) {
		t.Helper()
		if p == nil || p.Kind != ProblemTruncated || p.Seq != seq {
			t.Fatalf("got %+v, want the head reported truncated at seq %d", p, seq)
		}
	}

	if p := verify(copyLog(t, base), 0); p != nil {
		t.Fatalf("intact log: %+v", p)
	}
	// The first records of the first file (its name unchanged).
	files := copyLog(t, base)
	dropHead(t, files, 0, 5)
	want(verify(files, 0), 1)
	// ... even when the verifier is told the log starts where it now does:
	// the file's next checkpoint names seq 1 as the head of its file.
	want(verify(files, 6), 1)

	// The oldest file: reported unless its removal is declared.
	files = copyLog(t, base)
	second := firstSeqOf(t, files[1])
	want(verify(files[1:], 0), 1)
	if p := verify(files[1:], second); p != nil {
		t.Fatalf("a log cut at a file boundary by retention, declared: %+v", p)
	}
	// The oldest file and the first records of the next one.
	dropHead(t, files, 1, 3)
	want(verify(files[1:], second), second)
	want(verify(files[1:], second+3), second)
	// The newest file cut at its head, with no signed line after the cut
	// (a live log's open tail): its name still says where it began.
	files = copyLog(t, base)
	last := len(files) - 1
	lastFirst := firstSeqOf(t, files[last])
	lines, _ := readLines(t, files[last:])
	if err := os.WriteFile(files[last], bytes.Join(append([][]byte{}, lines[len(lines)-3:len(lines)-1]...), nil), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Verify(files[last:], VerifyOptions{PublicKey: k.PublicKey(), FirstSeq: lastFirst + uint64(len(lines)) - 3, AllowOpenTail: true})
	if err != nil || res.Problem == nil || res.Problem.Kind != ProblemTruncated || res.Problem.Seq != lastFirst {
		t.Fatalf("open tail cut at its head: %v %+v", err, res.Problem)
	}
	// A file in the middle that lost its head: the chain reports it.
	files = copyLog(t, base)
	dropHead(t, files, 2, 1)
	if p := verify(files, 0); p == nil || p.Kind != ProblemMissing {
		t.Fatalf("a later file's head: %+v", p)
	}
}

// TestFormat1LogStillVerifies: a log written before format 2 (checkpoints
// only, testdata/format1) verifies, and a trail continues it in format 2.
func TestFormat1LogStillVerifies(t *testing.T) {
	pubB, err := os.ReadFile("testdata/format1/pubkey")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(string(pubB))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Verify(mustFiles(t, "testdata/format1"), VerifyOptions{PublicKey: pub})
	if err != nil || res.Problem != nil || res.Format != 1 || res.Records != 70 || res.Starts != 0 {
		t.Fatalf("format-1 log: %v %+v", err, res)
	}
	// Continued by this version: one log, format 1 then 2.
	dir := t.TempDir()
	for _, f := range append(mustFiles(t, "testdata/format1"), "testdata/format1/audit.key") {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o600)
	}
	k, err := LoadKeys(filepath.Join(dir, "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	writeLog(t, dir, k, 100, Options{MaxFileSize: 8 << 10, CheckpointEvery: 25})
	res, err = Verify(mustFiles(t, dir), VerifyOptions{PublicKey: pub})
	if err != nil || res.Problem != nil || res.Format != 2 || res.Records != 170 || res.Starts < 2 || len(res.Unverified) != 0 {
		t.Fatalf("format-1 log continued in format 2: %v %+v", err, res)
	}
	// The format-1 file that format 2 continued names its head in its start
	// record and checkpoints: cutting its first records is reported even
	// when the verifier starts where the file now begins.
	files := mustFiles(t, dir)[2:]
	if first := firstSeqOf(t, files[0]); first != 53 {
		t.Fatalf("fixture: third file begins at %d", first)
	}
	dropHead(t, files, 0, 3)
	res, err = Verify(files, VerifyOptions{PublicKey: pub, FirstSeq: 56})
	if err != nil || res.Problem == nil || res.Problem.Kind != ProblemTruncated || res.Problem.Seq != 53 {
		t.Fatalf("head of a continued format-1 file cut: %v %+v", err, res.Problem)
	}
}

// appendForged appends n request records to the newest file of dir,
// chained correctly but unsigned, as someone with write access to the
// audit directory could while the server is down.
func appendForged(t *testing.T, dir string, n int, breakChain bool) (first uint64) {
	t.Helper()
	files := mustFiles(t, dir)
	name := files[len(files)-1]
	seq, prev, _, err := lastLine(name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if breakChain {
		prev = genesis
	}
	for i := range n {
		line := fmt.Sprintf(`{"seq":%d,"prev":"%s","type":"request","time":"2026-01-01T00:00:00Z","principal":{"kind":"root"},"action":"key:Delete","outcome":"ok"}`, seq+1+uint64(i), prev)
		h := sha256.Sum256([]byte(line))
		prev = hex.EncodeToString(h[:])
		if _, err := f.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
	}
	return seq + 1
}

// TestRestartMarksUnsignedTail: records a restarted trail finds after the
// last signed line are declared inherited unverified in its start record,
// and verify lists them: the next checkpoint does not silently vouch for
// them.
func TestRestartMarksUnsignedTail(t *testing.T) {
	k := testKeys(t)
	dir := t.TempDir()
	writeLog(t, dir, k, 20, Options{})
	first := appendForged(t, dir, 3, false)
	writeLog(t, dir, k, 5, Options{})
	res, err := Verify(mustFiles(t, dir), VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || res.Problem != nil {
		t.Fatalf("verify: %v %+v", err, res.Problem)
	}
	want := []SeqRange{{From: first, To: first + 2, At: first + 3}}
	if !slices.Equal(res.Unverified, want) {
		t.Fatalf("unverified %+v, want %+v", res.Unverified, want)
	}

	// A crash: records fsynced after the last checkpoint, then no close.
	live := t.TempDir()
	tr, err := Open(Options{Dir: live, Keys: k, CheckpointEvery: 1000, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := tr.Record(context.Background(), &Record{Time: time.Now(), Action: "kms:Encrypt", RequestID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	crashed := t.TempDir()
	for _, f := range mustFiles(t, live) {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(crashed, filepath.Base(f)), b, 0o600)
	}
	tr.Close()
	writeLog(t, crashed, k, 2, Options{})
	res, err = Verify(mustFiles(t, crashed), VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || res.Problem != nil || res.Records != 6 {
		t.Fatalf("verify after a crash: %v %+v", err, res)
	}
	// Seq 1 is the first start record; records 2..5 were never signed.
	if want := []SeqRange{{From: 2, To: 5, At: 6}}; !slices.Equal(res.Unverified, want) {
		t.Fatalf("unverified %+v, want %+v", res.Unverified, want)
	}
}

// TestRestartRefusesTamperedTail: a trail does not continue a log whose
// end does not verify — a record after the last checkpoint that does not
// chain, an altered last checkpoint, a log signed with another key — so it
// never signs over records it cannot vouch for.
func TestRestartRefusesTamperedTail(t *testing.T) {
	k := testKeys(t)
	cases := []struct {
		name string
		edit func(t *testing.T, dir string)
		keys *Keys
	}{
		{"unchained record", func(t *testing.T, dir string) { appendForged(t, dir, 2, true) }, k},
		{"altered last checkpoint", func(t *testing.T, dir string) {
			files := mustFiles(t, dir)
			lines, from := readLines(t, files)
			n := len(lines) - 1
			lines[n] = bytes.Replace(lines[n], []byte(`"time":"2`), []byte(`"time":"1`), 1)
			writeLines(t, files, lines, from)
		}, k},
		{"altered record before the last checkpoint", func(t *testing.T, dir string) {
			files := mustFiles(t, dir)
			lines, from := readLines(t, files)
			n := len(lines) - 2
			lines[n] = bytes.Replace(lines[n], []byte(`"kms:Encrypt"`), []byte(`"kms:Decrypt"`), 1)
			rechain(t, lines, n)
			writeLines(t, files, lines, from)
		}, k},
		{"another key", func(t *testing.T, dir string) {}, testKeys(t)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLog(t, dir, k, 20, Options{})
			c.edit(t, dir)
			before, _ := readLines(t, mustFiles(t, dir))
			tr, err := Open(Options{Dir: dir, Keys: c.keys})
			if err == nil {
				tr.Close()
				t.Fatal("the trail continued a log whose end does not verify")
			}
			if !strings.Contains(err.Error(), "cannot continue the log") {
				t.Fatalf("error does not say what to do: %v", err)
			}
			if after, _ := readLines(t, mustFiles(t, dir)); len(after) != len(before) {
				t.Fatal("the refused trail wrote to the log")
			}
		})
	}
}
