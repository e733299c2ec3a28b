package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testKeys(t testing.TB) *Keys {
	t.Helper()
	k, err := LoadOrCreateKeys(filepath.Join(t.TempDir(), "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeLog writes n request records through a real Trail and closes it.
func writeLog(t testing.TB, dir string, k *Keys, n int, opt Options) {
	t.Helper()
	opt.Dir, opt.Keys = dir, k
	tr, err := Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	ch := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range ch {
				r := &Record{Time: time.Unix(1700000000+int64(i), 0).UTC(), RequestID: fmt.Sprintf("r%d", i),
					Action: "kms:Encrypt", Resource: "alias/app", Principal: Principal{Kind: "token", Accessor: "acc_1"},
					Token: "cft_secret", ContextValues: map[string]string{"tenant": "acme"}, Outcome: "ok"}
				if err := tr.Record(context.Background(), r); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
}

func mustFiles(t *testing.T, dir string) []string {
	t.Helper()
	fs, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestTrailVerifiesAcrossRotationAndRestart(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	opt := Options{MaxFileSize: 20 << 10, CheckpointEvery: 50}
	writeLog(t, dir, k, 500, opt)
	writeLog(t, dir, k, 300, opt) // restart continues the chain
	files := mustFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("want rotation, got %d files", len(files))
	}
	res, err := Verify(files, VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || res.Problem != nil {
		t.Fatalf("verify: %v %v", err, res.Problem)
	}
	if res.Records != 800 || res.FirstSeq != 1 || res.UnsignedTail != 0 {
		t.Fatalf("result %+v", res)
	}
	for _, f := range files {
		st, _ := os.Stat(f)
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, st.Mode())
		}
	}
	// Secrets never reach the file; their HMACs do.
	all, _ := os.ReadFile(files[0])
	if bytes.Contains(all, []byte("cft_secret")) || bytes.Contains(all, []byte("acme")) {
		t.Fatal("a secret value reached the log")
	}
	if !bytes.Contains(all, []byte(k.HMAC("cft_secret"))) {
		t.Fatal("token HMAC missing")
	}
	// A wrong public key fails at the first checkpoint.
	other := testKeys(t)
	res, _ = Verify(files, VerifyOptions{PublicKey: other.PublicKey()})
	if res.Problem == nil || res.Problem.Kind != ProblemSignature {
		t.Fatalf("wrong key: %+v", res.Problem)
	}
}

// lines of all files, and which file each came from.
func readLines(t *testing.T, files []string) ([][]byte, []int) {
	var out [][]byte
	var from []int
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for l := range bytes.Lines(b) {
			out = append(out, bytes.Clone(l))
			from = append(from, i)
		}
	}
	return out, from
}

func writeLines(t *testing.T, files []string, lines [][]byte, from []int) {
	bufs := make([]bytes.Buffer, len(files))
	for i, l := range lines {
		bufs[from[i]].Write(l)
	}
	for i, f := range files {
		if err := os.WriteFile(f, bufs[i].Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func seqOf(t *testing.T, l []byte) uint64 {
	s, _, err := parseHead(bytes.TrimSpace(l))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTamperDetection(t *testing.T) {
	k := testKeys(t)
	base := t.TempDir()
	writeLog(t, base, k, 400, Options{MaxFileSize: 16 << 10, CheckpointEvery: 64})
	orig := mustFiles(t, base)

	// Each case edits the lines (index i is the line of seq i+1) and says
	// which problem and sequence number verify must report.
	cases := []struct {
		name string
		edit func(lines [][]byte, from []int) ([][]byte, []int)
		kind string
		seq  uint64
	}{
		{"delete", func(l [][]byte, f []int) ([][]byte, []int) {
			return append(l[:99:99], l[100:]...), append(f[:99:99], f[100:]...)
		}, ProblemMissing, 100},
		{"modify", func(l [][]byte, f []int) ([][]byte, []int) {
			l[149] = bytes.Replace(l[149], []byte("kms:Encrypt"), []byte("kms:Decrypt"), 1)
			return l, f
		}, ProblemAltered, 150},
		{"swap", func(l [][]byte, f []int) ([][]byte, []int) {
			l[199], l[200] = l[200], l[199]
			return l, f
		}, ProblemMissing, 200},
		{"duplicate", func(l [][]byte, f []int) ([][]byte, []int) {
			l = append(l[:251:251], l[250:]...)
			f = append(f[:251:251], f[250:]...)
			return l, f
		}, ProblemReordered, 251},
		{"truncate inside a record", func(l [][]byte, f []int) ([][]byte, []int) {
			n := len(l) - 10
			l = l[:n+1]
			l[n] = l[n][:len(l[n])/2]
			return l, f[:n+1]
		}, ProblemTruncated, 0},
		{"truncate whole records at the end", func(l [][]byte, f []int) ([][]byte, []int) {
			// Cut three lines, and more while the cut would end on a
			// signed line (a checkpoint, or a new file's start record):
			// a log may legitimately end there, so such a cut is
			// undetectable by design. Where the last file starts depends
			// on how the eight writers' records were batched, so a fixed
			// cut ended on one now and then.
			n := len(l) - 3
			for n > 1 && lineKind(bytes.TrimSpace(l[n-1])) != "" {
				n--
			}
			return l[:n], f[:n]
		}, ProblemTruncated, 0},
		{"modify last checkpoint", func(l [][]byte, f []int) ([][]byte, []int) {
			n := len(l) - 1
			l[n] = bytes.Replace(l[n], []byte(`"time":"2`), []byte(`"time":"1`), 1)
			return l, f
		}, ProblemSignature, 0},
		{"drop a rotated file", nil, ProblemMissing, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			var files []string
			for _, f := range orig {
				b, _ := os.ReadFile(f)
				nf := filepath.Join(dir, filepath.Base(f))
				os.WriteFile(nf, b, 0o600)
				files = append(files, nf)
			}
			lines, from := readLines(t, files)
			want := c.seq
			if c.edit == nil {
				// Remove the second file entirely.
				first := seqOf(t, lines[indexOf(from, 1)])
				files = append(files[:1:1], files[2:]...)
				want = first
			} else {
				lines, from = c.edit(lines, from)
				writeLines(t, files, lines, from)
				if want == 0 {
					switch c.kind {
					case ProblemTruncated:
						// The first record after the last intact checkpoint,
						// or the torn one.
						want = lastCheckpointBefore(t, lines) + 1
						if c.name == "truncate inside a record" {
							want = seqOf(t, lines[len(lines)-2]) + 1
						}
					case ProblemSignature:
						want = seqOf(t, lines[len(lines)-1])
					}
				}
			}
			res, err := Verify(files, VerifyOptions{PublicKey: k.PublicKey()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Problem == nil {
				t.Fatalf("tampering not detected: %+v", res)
			}
			if res.Problem.Kind != c.kind || res.Problem.Seq != want {
				t.Fatalf("got %s at seq %d (%s), want %s at seq %d", res.Problem.Kind, res.Problem.Seq, res.Problem.Message, c.kind, want)
			}
		})
	}
}

func indexOf(from []int, file int) int {
	for i, f := range from {
		if f == file {
			return i
		}
	}
	return -1
}

func lastCheckpointBefore(t *testing.T, lines [][]byte) uint64 {
	for i := len(lines) - 1; i >= 0; i-- {
		if isCheckpoint(bytes.TrimSpace(lines[i])) {
			return seqOf(t, lines[i])
		}
	}
	return 0
}

// faultyFile fails writes while fail is set, after writing half the data
// (like a disk that fills up mid-write).
type faultyFile struct {
	*os.File
	fail *bool
}

func (f faultyFile) Write(b []byte) (int, error) {
	if *f.fail {
		n, _ := f.File.Write(b[:len(b)/2])
		return n, errors.New("no space left on device")
	}
	return f.File.Write(b)
}

func TestFailClosedAndRecovery(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	fail := false
	var failures int
	tr, err := Open(Options{Dir: dir, Keys: k, CheckpointEvery: 10,
		OpenFile: func(name string, flag int, perm os.FileMode) (File, error) {
			f, err := os.OpenFile(name, flag, perm)
			if err != nil {
				return nil, err
			}
			return faultyFile{f, &fail}, nil
		},
		Observe: func(_ time.Duration, _ int, err error) {
			if err != nil {
				failures++
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	rec := func(i int) error {
		return tr.Record(context.Background(), &Record{Time: time.Now(), Action: "key:Create", RequestID: fmt.Sprint(i), Outcome: "ok"})
	}
	for i := range 15 {
		if err := rec(i); err != nil {
			t.Fatal(err)
		}
	}
	fail = true
	for i := range 5 {
		if err := rec(100 + i); err == nil || !strings.Contains(err.Error(), "no space") {
			t.Fatalf("want a write failure, got %v", err)
		}
	}
	fail = false
	for i := range 5 {
		if err := rec(200 + i); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}
	tr.Close()
	if failures == 0 {
		t.Fatal("failures not observed")
	}
	res, err := Verify(mustFiles(t, dir), VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || res.Problem != nil {
		t.Fatalf("log after failures: %v %v", err, res.Problem)
	}
	if res.Records != 20 {
		t.Fatalf("want 20 records (failed ones absent), got %d", res.Records)
	}
}

func TestTornTailIsCutOnRestart(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	writeLog(t, dir, k, 10, Options{})
	files := mustFiles(t, dir)
	f, _ := os.OpenFile(files[0], os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"seq":12,"prev":"abc`) // a write that was never acknowledged
	f.Close()
	writeLog(t, dir, k, 10, Options{})
	res, err := Verify(mustFiles(t, dir), VerifyOptions{})
	if err != nil || res.Problem != nil || res.Records != 20 {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestSearch(t *testing.T) {
	dir := t.TempDir()
	k := testKeys(t)
	writeLog(t, dir, k, 100, Options{})
	f, _ := os.Open(mustFiles(t, dir)[0])
	defer f.Close()
	n := 0
	err := Search(f, Query{Principal: "acc_1", Action: "kms:*", Since: time.Unix(1700000050, 0), Until: time.Unix(1700000060, 0)},
		func(_ []byte, r *Record) error { n++; return nil })
	if err != nil || n != 10 {
		t.Fatalf("n=%d err=%v", n, err)
	}
}

func TestKeysStable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	a, err := LoadOrCreateKeys(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadKeys(p)
	if err != nil {
		t.Fatal(err)
	}
	if a.HMAC("x") != b.HMAC("x") || a.PublicKeyString() != b.PublicKeyString() {
		t.Fatal("keys differ after reload")
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte(`{"seq":1,"prev":"` + genesis + `","type":"request"}` + "\n"))
	f.Add([]byte(`{"seq":1,"prev":"` + genesis + `","type":"checkpoint","time":"x","key":"AA==","sig":""}` + "\n"))
	f.Add([]byte("{\"seq\":18446744073709551615,\"prev\":\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "a.jsonl")
		os.WriteFile(p, data, 0o600)
		res, err := Verify([]string{p}, VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Problem == nil && res.Records+res.Checkpoints == 0 && len(bytes.TrimSpace(data)) > 0 && bytes.Count(data, []byte("\n")) > 0 {
			t.Fatalf("accepted garbage: %q", data)
		}
	})
}

// TestRecordRefusesCancelledContext: a caller whose context is already
// done is refused every time (a select with a free queue used to pick
// either case at random), and nothing is written for it.
func TestRecordRefusesCancelledContext(t *testing.T) {
	dir := t.TempDir()
	tr, err := Open(Options{Dir: dir, Keys: testKeys(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 200 {
		r := &Record{Time: time.Now().UTC(), RequestID: fmt.Sprintf("c%d", i), Action: "kms:Encrypt", Outcome: "ok"}
		if err := tr.Record(ctx, r); !errors.Is(err, context.Canceled) {
			t.Fatalf("record %d with a cancelled context: %v", i, err)
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range mustFiles(t, dir) {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(`"request_id":"c`)) {
			t.Fatalf("%s holds a refused record", f)
		}
	}
}

// stalledWriter blocks every write until release is closed.
type stalledWriter struct{ release chan struct{} }

func (w stalledWriter) Write(b []byte) (int, error) { <-w.release; return len(b), nil }

// TestStalledStdoutMirrorDoesNotBlock: with a file sink, stdout is a
// best-effort mirror; a reader that stops reading must not stop commits
// (it used to be written on the committing goroutine).
func TestStalledStdoutMirrorDoesNotBlock(t *testing.T) {
	w := stalledWriter{release: make(chan struct{})}
	defer close(w.release)
	var dropped atomic.Int64
	tr, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), Stdout: w, OnStdoutDrop: func(n int) { dropped.Add(int64(n)) }})
	if err != nil {
		t.Fatal(err)
	}
	n := stdoutQueueLen + 50
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := tr.Record(ctx, &Record{Time: time.Now().UTC(), RequestID: fmt.Sprintf("s%d", i), Action: "kms:Encrypt", Outcome: "ok"})
		cancel()
		if err != nil {
			t.Fatalf("record %d behind a stalled stdout: %v", i, err)
		}
	}
	if dropped.Load() == 0 {
		t.Errorf("%d records behind a stalled stdout, none dropped", n)
	}
	done := make(chan struct{})
	go func() { tr.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs on a stalled stdout")
	}
}
