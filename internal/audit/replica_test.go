package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestValidateReplicaID(t *testing.T) {
	for _, id := range []string{"a", "coffer-0", "node1.example.com", "Pod_7", strings.Repeat("a", MaxReplicaID), "00000000000000000001"} {
		if err := ValidateReplicaID(id); err != nil {
			t.Errorf("%q refused: %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "../x", "a/b", `a\b`, ".hidden", "x-", "-x", "a b", "é", "a\x00", "a:b",
		strings.Repeat("a", MaxReplicaID+1)} {
		if err := ValidateReplicaID(id); err == nil {
			t.Errorf("%q accepted", id)
		}
		if _, err := Open(Options{Dir: t.TempDir(), Keys: testKeys(t), ReplicaID: id}); id != "" && err == nil {
			t.Errorf("Open accepted replica id %q", id)
		}
	}
	// Names: a replica part that is not a valid id is not a log file.
	for name, want := range map[string]string{
		"audit-00000000000000000001.jsonl":                      "",
		"audit-coffer-0-00000000000000000001.jsonl":             "coffer-0",
		"audit-00000000000000000007-00000000000000000001.jsonl": "00000000000000000007",
	} {
		r, n, ok := parseFileName(name)
		if !ok || r != want || n != 1 {
			t.Errorf("%s: %q %d %v", name, r, n, ok)
		}
	}
	for _, name := range []string{"audit--00000000000000000001.jsonl", "audit-.x-00000000000000000001.jsonl",
		"audit-a-0000000000000000001.jsonl", "audit-a-00000000000000000001.json", "audit.key", "audit-legacy.claim"} {
		if _, _, ok := parseFileName(name); ok {
			t.Errorf("%s parsed as a log file", name)
		}
	}
}

// recordAt writes one request record of the given time through tr.
func recordAt(t testing.TB, tr *Trail, at time.Time, id string) {
	t.Helper()
	r := &Record{Time: at, RequestID: id, Action: "kms:Encrypt", Resource: "alias/app",
		Principal: Principal{Kind: "token", Accessor: "acc_1"}, Token: "cft_secret", Outcome: "ok"}
	if err := tr.Record(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// twoReplicas writes n records through each of two trails (replicas r-a
// and r-b) sharing dir, interleaved in time: r-a's record i at base+i s,
// r-b's at base+i s too (equal times), from concurrent writers.
func twoReplicas(t testing.TB, dir string, k *Keys, n int) {
	t.Helper()
	opt := Options{Dir: dir, Keys: k, MaxFileSize: 8 << 10, CheckpointEvery: 20}
	var trs []*Trail
	for _, r := range []string{"r-a", "r-b"} {
		opt.ReplicaID = r
		tr, err := Open(opt)
		if err != nil {
			t.Fatal(err)
		}
		trs = append(trs, tr)
	}
	base := time.Unix(1700000000, 0).UTC()
	var wg sync.WaitGroup
	for j, tr := range trs {
		wg.Go(func() {
			for i := range n {
				recordAt(t, tr, base.Add(time.Duration(i)*time.Second), fmt.Sprintf("%d-%d", j, i))
			}
		})
	}
	wg.Wait()
	for _, tr := range trs {
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func verifyAll(t *testing.T, paths []string, opt TrailsOptions) map[string]ReplicaResult {
	t.Helper()
	res, err := VerifyTrails(paths, opt)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ReplicaResult{}
	for _, r := range res {
		out[r.Replica] = r
	}
	return out
}

// TestTwoReplicasShareADirectory: two trails of two replicas write to one
// directory at the same time without clobbering each other; each file
// and each line names its replica; both trails verify; a restart
// continues its own trail; search merges them in time order.
func TestTwoReplicasShareADirectory(t *testing.T) {
	k := testKeys(t)
	dir := t.TempDir()
	twoReplicas(t, dir, k, 300)
	for _, r := range []string{"r-a", "r-b"} {
		fs, err := ReplicaFiles(dir, r)
		if err != nil || len(fs) < 3 {
			t.Fatalf("%s: want rotated files, got %v %v", r, fs, err)
		}
		for _, f := range fs {
			if !strings.HasPrefix(filepath.Base(f), "audit-"+r+"-") {
				t.Fatalf("file %s of replica %s", f, r)
			}
			b, _ := os.ReadFile(f)
			for l := range bytes.Lines(b) {
				if !bytes.Contains(l, []byte(`"type":`)) || !bytes.Contains(l, []byte(`,"replica":"`+r+`",`)) {
					t.Fatalf("%s: a line without its replica: %s", f, l)
				}
			}
		}
	}
	if fs, _ := ReplicaFiles(dir, ""); len(fs) != 0 {
		t.Fatalf("files without replica id: %v", fs)
	}
	res := verifyAll(t, []string{dir}, TrailsOptions{PublicKey: k.PublicKey()})
	if len(res) != 2 {
		t.Fatalf("want 2 trails, got %+v", res)
	}
	for _, r := range []string{"r-a", "r-b"} {
		v := res[r]
		if v.Problem != nil || v.Records != 300 || v.Format != 3 || v.FirstSeq != 1 || v.ContinuesLegacy {
			t.Fatalf("%s: %+v %+v", r, v, v.Problem)
		}
	}
	// A restart of r-a continues r-a's chain, not r-b's.
	opt := Options{Dir: dir, Keys: k, ReplicaID: "r-a", MaxFileSize: 8 << 10, CheckpointEvery: 20}
	tr, err := Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	recordAt(t, tr, time.Unix(1700000000+1000, 0).UTC(), "late")
	tr.Close()
	res = verifyAll(t, []string{dir}, TrailsOptions{PublicKey: k.PublicKey()})
	if v := res["r-a"]; v.Problem != nil || v.Records != 301 || len(v.Unverified) != 0 {
		t.Fatalf("r-a after restart: %+v %+v", v, v.Problem)
	}
	if v := res["r-b"]; v.Problem != nil || v.Records != 300 {
		t.Fatalf("r-b after r-a's restart: %+v %+v", v, v.Problem)
	}

	// Search merges the trails by time, then replica, then seq.
	trails, err := Trails([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	var srcs []Source
	for _, tr := range trails {
		srcs = append(srcs, Source{Replica: tr.Replica, Files: tr.Files})
	}
	var got []*Record
	err = SearchMerged(srcs, Query{Action: "kms:*"}, 0, func(line []byte, rec *Record) error {
		if !bytes.Contains(line, []byte(rec.Replica)) {
			t.Fatalf("line %s is not of record %+v", line, rec)
		}
		got = append(got, rec)
		return nil
	})
	if err != nil || len(got) != 601 {
		t.Fatalf("merged search: %v, %d records", err, len(got))
	}
	sorted := slices.IsSortedFunc(got, func(a, b *Record) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		if c := strings.Compare(a.Replica, b.Replica); c != 0 {
			return c
		}
		return int(a.Seq) - int(b.Seq)
	})
	if !sorted {
		t.Fatal("merged search is not in (time, replica, seq) order")
	}
	// Equal times: r-a before r-b.
	if got[0].Replica != "r-a" || got[1].Replica != "r-b" || !got[0].Time.Equal(got[1].Time) {
		t.Fatalf("first two: %+v %+v", got[0], got[1])
	}
	// The replica filter.
	n := 0
	SearchMerged(srcs, Query{Replicas: []string{"r-b"}}, 0, func(_ []byte, rec *Record) error {
		if rec.Replica != "r-b" {
			t.Fatalf("filtered search returned %+v", rec)
		}
		n++
		return nil
	})
	if n != 300 {
		t.Fatalf("r-b has %d records", n)
	}
}

// TestSearchMergedOrdersWithinATrail: records committed out of time order
// (a slow request's record lands after faster later ones) come out in
// time order within the window, and the window bounds what is held.
func TestSearchMergedOrdersWithinATrail(t *testing.T) {
	k := testKeys(t)
	dir := t.TempDir()
	tr, err := Open(Options{Dir: dir, Keys: k, ReplicaID: "r-a"})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1700000000, 0).UTC()
	// Times 0..99, each block of 10 written in reverse.
	for b := range 10 {
		for i := 9; i >= 0; i-- {
			recordAt(t, tr, base.Add(time.Duration(b*10+i)*time.Second), "x")
		}
	}
	tr.Close()
	files, _ := ReplicaFiles(dir, "r-a")
	run := func(window int) []time.Time {
		var ts []time.Time
		if err := SearchMerged([]Source{{Replica: "r-a", Files: files}}, Query{}, window, func(_ []byte, rec *Record) error {
			ts = append(ts, rec.Time)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(ts) != 100 {
			t.Fatalf("window %d: %d records", window, len(ts))
		}
		return ts
	}
	if ts := run(10); !slices.IsSortedFunc(ts, time.Time.Compare) {
		t.Fatal("window 10 leaves a displacement of 9 unsorted")
	}
	if ts := run(2); slices.IsSortedFunc(ts, time.Time.Compare) {
		t.Fatal("window 2 sorted a displacement of 9: the window is not what bounds the memory")
	}
}

// copyDir copies the regular files of dir into a new directory.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestReplicaTrailsTamper: each replica's trail must be whole; a record
// or a file moved between the trails, a missing file, a cut head, a
// relabelled record are reported in the result of the replica concerned,
// which the problem names.
func TestReplicaTrailsTamper(t *testing.T) {
	k := testKeys(t)
	base := t.TempDir()
	twoReplicas(t, base, k, 200)
	opt := TrailsOptions{PublicKey: k.PublicKey()}
	want := func(res map[string]ReplicaResult, replica, kind string, say ...string) {
		t.Helper()
		p := res[replica].Problem
		if p == nil || p.Kind != kind || p.Replica != replica {
			t.Fatalf("%s: got %+v, want %s", replica, p, kind)
		}
		for _, s := range say {
			if !strings.Contains(p.Message, s) {
				t.Fatalf("%s: %q does not say %q", replica, p.Message, s)
			}
		}
	}
	ok := func(res map[string]ReplicaResult, replica string) {
		t.Helper()
		if p := res[replica].Problem; p != nil {
			t.Fatalf("%s: %+v", replica, p)
		}
	}
	filesOf := func(dir, r string) []string {
		fs, err := ReplicaFiles(dir, r)
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}

	ok(verifyAll(t, []string{base}, opt), "r-a")

	// Swap a record across the trails (same file position, same seq).
	dir := copyDir(t, base)
	fa, fb := filesOf(dir, "r-a")[1], filesOf(dir, "r-b")[1]
	la, _ := readLines(t, []string{fa})
	lb, _ := readLines(t, []string{fb})
	if seqOf(t, la[3]) != seqOf(t, lb[3]) {
		t.Fatal("fixture: the second files do not begin at the same seq")
	}
	la[3], lb[3] = lb[3], la[3]
	writeLines(t, []string{fa}, la, make([]int, len(la)))
	writeLines(t, []string{fb}, lb, make([]int, len(lb)))
	res := verifyAll(t, []string{dir}, opt)
	want(res, "r-a", ProblemForeign, `"r-b"`, "moved between")
	want(res, "r-b", ProblemForeign, `"r-a"`)

	// A record of r-b relabelled r-a and put in r-a's trail at its seq:
	// the chain breaks.
	dir = copyDir(t, base)
	fa, fb = filesOf(dir, "r-a")[1], filesOf(dir, "r-b")[1]
	la, _ = readLines(t, []string{fa})
	lb, _ = readLines(t, []string{fb})
	la[3] = bytes.Replace(lb[3], []byte(`"replica":"r-b"`), []byte(`"replica":"r-a"`), 1)
	writeLines(t, []string{fa}, la, make([]int, len(la)))
	res = verifyAll(t, []string{dir}, opt)
	want(res, "r-a", ProblemAltered)
	ok(res, "r-b")

	// A record without its replica (format 3 requires one), rechained.
	dir = copyDir(t, base)
	fa = filesOf(dir, "r-a")[1]
	la, _ = readLines(t, []string{fa})
	la[3] = bytes.Replace(la[3], []byte(`"replica":"r-a",`), nil, 1)
	rechain(t, la, 3)
	writeLines(t, []string{fa}, la, make([]int, len(la)))
	want(verifyAll(t, []string{dir}, opt), "r-a", ProblemForeign, "names no replica")

	// A file of r-b given the name of one of r-a's.
	dir = copyDir(t, base)
	fa, fb = filesOf(dir, "r-a")[1], filesOf(dir, "r-b")[1]
	b, _ := os.ReadFile(fb)
	os.WriteFile(fa, b, 0o600)
	want(verifyAll(t, []string{dir}, opt), "r-a", ProblemForeign)

	// A file of r-a's under the name of a log without replica id, and a
	// file without replica ids under r-a's name: neither belongs.
	dir = copyDir(t, base)
	fa = filesOf(dir, "r-a")[1]
	legacyName := fileName(dir, "", firstSeqOf(t, fa))
	os.Rename(fa, legacyName)
	r, err := Verify([]string{legacyName}, VerifyOptions{PublicKey: k.PublicKey(), FirstSeq: firstSeqOf(t, legacyName)})
	if err != nil || r.Problem == nil || r.Problem.Kind != ProblemForeign {
		t.Fatalf("a replica's file under an old name: %v %+v", err, r.Problem)
	}
	legacyDir := t.TempDir()
	writeLog(t, legacyDir, k, 5, Options{})
	old, _ := ReplicaFiles(legacyDir, "")
	b, _ = os.ReadFile(old[0])
	renamed := fileName(t.TempDir(), "r-a", 1)
	os.WriteFile(renamed, b, 0o600)
	r, err = Verify([]string{renamed}, VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || r.Problem == nil || r.Problem.Kind != ProblemForeign {
		t.Fatalf("an old file under a replica's name: %v %+v", err, r.Problem)
	}

	// A missing file in the middle of r-a's trail.
	dir = copyDir(t, base)
	os.Remove(filesOf(dir, "r-a")[1])
	res = verifyAll(t, []string{dir}, opt)
	want(res, "r-a", ProblemMissing)
	ok(res, "r-b")

	// r-a's oldest file removed: its head is cut.
	dir = copyDir(t, base)
	os.Remove(filesOf(dir, "r-a")[0])
	res = verifyAll(t, []string{dir}, opt)
	want(res, "r-a", ProblemTruncated, "--first-seq")
	ok(res, "r-b")
	// ... unless declared for that replica (retention).
	second := firstSeqOf(t, filesOf(dir, "r-a")[0])
	res = verifyAll(t, []string{dir}, TrailsOptions{PublicKey: k.PublicKey(), FirstSeq: map[string]uint64{"r-a": second}})
	ok(res, "r-a")
	ok(res, "r-b")

	// The first records of r-a's oldest file cut, keeping its name.
	dir = copyDir(t, base)
	dropHead(t, filesOf(dir, "r-a"), 0, 3)
	want(verifyAll(t, []string{dir}, opt), "r-a", ProblemTruncated)

	// The trails split over two directories (each replica's own volume)
	// verify the same; a selected replica without files is reported.
	da, db := t.TempDir(), t.TempDir()
	for _, f := range filesOf(base, "r-a") {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(da, filepath.Base(f)), b, 0o600)
	}
	for _, f := range filesOf(base, "r-b") {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(db, filepath.Base(f)), b, 0o600)
	}
	res = verifyAll(t, []string{da, db}, TrailsOptions{PublicKey: k.PublicKey(), Replicas: []string{"r-b", "r-c"}})
	if len(res) != 2 {
		t.Fatalf("selection: %+v", res)
	}
	ok(res, "r-b")
	want(res, "r-c", ProblemMissing, "no audit file")

	// The last checkpoint re-signed (with the real key) for another
	// replica than the one its line names: the signature binds the
	// replica written in the line.
	dir = copyDir(t, base)
	fs := filesOf(dir, "r-a")
	last := fs[len(fs)-1]
	la, _ = readLines(t, []string{last})
	n := len(la) - 1
	if lineKind(bytes.TrimSpace(la[n])) != TypeCheckpoint {
		t.Fatal("fixture: the trail does not end with a checkpoint")
	}
	seq, prev, _ := parseHead(bytes.TrimSpace(la[n]))
	c := checkpointFields(t, la[n])
	sig := ed25519.Sign(k.priv, checkpointMessageV3("r-b", seq, string(prev), c.Time, c.FileStart))
	la[n] = replaceSig(t, la[n], sig)
	writeLines(t, []string{last}, la, make([]int, len(la)))
	want(verifyAll(t, []string{dir}, opt), "r-a", ProblemSignature)
	// ... and re-signed for its own replica it verifies (the test above
	// fails for the replica, nothing else).
	la[n] = replaceSig(t, la[n], ed25519.Sign(k.priv, checkpointMessageV3("r-a", seq, string(prev), c.Time, c.FileStart)))
	writeLines(t, []string{last}, la, make([]int, len(la)))
	ok(verifyAll(t, []string{dir}, opt), "r-a")

	// A format-2 checkpoint after format-3 lines (a downgrade) is refused.
	v2 := fmt.Appendf(nil, `{"seq":%d,"prev":"%s","type":"checkpoint","replica":"r-a","time":%q,"v":2,"file_start":%d,"key":%q,"sig":%q}`+"\n",
		seq, prev, c.Time, c.FileStart, k.PublicKeyString(),
		base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, checkpointMessageV2(seq, string(prev), c.Time, c.FileStart))))
	la[n] = v2
	writeLines(t, []string{last}, la, make([]int, len(la)))
	want(verifyAll(t, []string{dir}, opt), "r-a", ProblemSignature, "format-2")
}

func checkpointFields(t *testing.T, line []byte) signedLine {
	t.Helper()
	var c signedLine
	if err := json.Unmarshal(bytes.TrimSpace(line), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func replaceSig(t *testing.T, line, sig []byte) []byte {
	t.Helper()
	i := bytes.Index(line, []byte(`"sig":"`))
	if i < 0 {
		t.Fatal("no sig")
	}
	return append(append(bytes.Clone(line[:i]), fmt.Sprintf(`"sig":%q}`, base64.StdEncoding.EncodeToString(sig))...), '\n')
}

// TestLegacyLogContinuedByOneReplica: a log written before replica ids
// is continued by the first replica that opens the directory (its chain
// goes on in files named for it); a second replica sharing the directory
// starts its own trail; verify checks the old log as the head of the
// first replica's trail.
func TestLegacyLogContinuedByOneReplica(t *testing.T) {
	// r-b opens first and continues the old log; r-a, sorting first,
	// must not be taken for its heir.
	k := testKeys(t)
	dir := t.TempDir()
	writeLog(t, dir, k, 50, Options{CheckpointEvery: 20})
	legacy, _ := ReplicaFiles(dir, "")
	lastSeq, _, _, _ := lastLine(legacy[len(legacy)-1])
	writeLog(t, dir, k, 30, Options{ReplicaID: "r-b", MaxFileSize: 4 << 10, CheckpointEvery: 20})
	writeLog(t, dir, k, 20, Options{ReplicaID: "r-a", CheckpointEvery: 20})
	fh, _ := ReplicaFiles(dir, "r-b")
	if first := firstSeqOf(t, fh[0]); first != lastSeq+1 {
		t.Fatalf("r-b's first file begins at %d, the old log ends at %d", first, lastSeq)
	}
	fo, _ := ReplicaFiles(dir, "r-a")
	if first := firstSeqOf(t, fo[0]); first != 1 {
		t.Fatalf("r-a continued the old log too (begins at %d)", first)
	}
	if b, _ := os.ReadFile(legacy[len(legacy)-1]); bytes.Contains(b, []byte(`"replica"`)) {
		t.Fatal("a replica wrote to the old log's file")
	}
	// A restart of r-b goes on in its own files.
	writeLog(t, dir, k, 10, Options{ReplicaID: "r-b", CheckpointEvery: 20})
	res := verifyAll(t, []string{dir}, TrailsOptions{PublicKey: k.PublicKey()})
	if len(res) != 2 {
		t.Fatalf("want r-b (with the old log) and r-a, got %+v", res)
	}
	if v := res["r-b"]; v.Problem != nil || !v.ContinuesLegacy || v.Records != 90 || v.Format != 3 || v.FirstSeq != 1 {
		t.Fatalf("r-b: %+v %+v", v, v.Problem)
	}
	if v := res["r-a"]; v.Problem != nil || v.ContinuesLegacy || v.Records != 20 {
		t.Fatalf("r-a: %+v %+v", v, v.Problem)
	}
	// A file without replica id after r-b's format-3 files (an older
	// server writing after a newer one, or a file moved) is refused.
	all := append(slices.Clone(legacy), fh...)
	extra := filepath.Join(t.TempDir(), "audit-99999999999999999999.jsonl")
	b, _ := os.ReadFile(legacy[0])
	os.WriteFile(extra, b, 0o600)
	r, err := Verify(append(all, extra), VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || r.Problem == nil || r.Problem.Kind != ProblemForeign {
		t.Fatalf("old-format file after format 3: %v %+v", err, r.Problem)
	}
}

// TestFormat3VectorStillVerifies: the committed format-3 log
// (testdata/format3: a format-2 log without replica id continued by
// replica coffer-0, and replica coffer-1's own trail, in one directory)
// verifies with its public key, so later versions keep reading format 3.
// COFFER_AUDIT_WRITE_VECTORS=1 writes it again.
func TestFormat3VectorStillVerifies(t *testing.T) {
	dir := "testdata/format3"
	if os.Getenv("COFFER_AUDIT_WRITE_VECTORS") == "1" {
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		k, err := LoadOrCreateKeys(filepath.Join(dir, "audit.key"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "pubkey"), []byte(k.PublicKeyString()+"\n"), 0o644)
		write := func(replica string, n, from int, opt Options) {
			opt.Dir, opt.Keys, opt.ReplicaID = dir, k, replica
			tr, err := Open(opt)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				recordAt(t, tr, time.Unix(1800000000+int64(from+2*i), 0).UTC(), fmt.Sprintf("%s-%d", replica, i))
			}
			tr.Close()
		}
		write("", 12, 0, Options{CheckpointEvery: 5})
		write("coffer-0", 15, 30, Options{CheckpointEvery: 5, MaxFileSize: 2 << 10})
		write("coffer-1", 10, 31, Options{CheckpointEvery: 5})
	}
	pubB, err := os.ReadFile(filepath.Join(dir, "pubkey"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(string(pubB))
	if err != nil {
		t.Fatal(err)
	}
	res := verifyAll(t, []string{dir}, TrailsOptions{PublicKey: pub})
	if len(res) != 2 {
		t.Fatalf("want 2 trails, got %+v", res)
	}
	if v := res["coffer-0"]; v.Problem != nil || !v.ContinuesLegacy || v.Format != 3 || v.Records != 27 || v.Files < 3 {
		t.Fatalf("coffer-0: %+v %+v", v, v.Problem)
	}
	if v := res["coffer-1"]; v.Problem != nil || v.ContinuesLegacy || v.Format != 3 || v.Records != 10 || v.FirstSeq != 1 {
		t.Fatalf("coffer-1: %+v %+v", v, v.Problem)
	}
	// The old log alone is still format 2.
	legacy, _ := ReplicaFiles(dir, "")
	r, err := Verify(legacy, VerifyOptions{PublicKey: pub, AllowOpenTail: true})
	if err != nil || r.Problem != nil || r.Format != 2 || r.Records != 12 {
		t.Fatalf("the format-2 part: %v %+v %+v", err, r, r.Problem)
	}
	// Merged by time: coffer-0's records at even seconds from 30,
	// coffer-1's at odd seconds from 31, the old log's before them.
	trails, _ := Trails([]string{dir})
	var srcs []Source
	for _, tr := range trails {
		srcs = append(srcs, Source{Replica: tr.Replica, Files: tr.Files})
	}
	var order []string
	SearchMerged(srcs, Query{}, 0, func(_ []byte, rec *Record) error {
		order = append(order, rec.Replica)
		return nil
	})
	want := slices.Repeat([]string{""}, 12)
	for i := range 15 {
		want = append(want, "coffer-0")
		if i < 10 {
			want = append(want, "coffer-1")
		}
	}
	if !slices.Equal(order, want) {
		t.Fatalf("merged order %v", order)
	}
}
