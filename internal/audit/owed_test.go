package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fullDisk is an Options.Reserve that fails while full is set, like
// fallocate on a disk with no free blocks.
type fullDisk struct{ full atomic.Bool }

func (d *fullDisk) reserve(File, int64, int64) error {
	if d.full.Load() {
		return syscall.ENOSPC
	}
	return nil
}

func owedRecord(id, phase string, detail int) *Record {
	return &Record{Time: time.Now().UTC(), RequestID: id, Phase: phase, Action: "key:ScheduleDeletion",
		Resource: "alias/app", Outcome: "ok", Detail: strings.Repeat("d", detail)}
}

// TestOutcomeSpaceIsKept: once a state change's intent is admitted, the
// space for its outcome record is kept for it. On a full disk the other
// records are refused before they eat into it, so the outcome is still
// written and the change is not answered 503 after it happened.
func TestOutcomeSpaceIsKept(t *testing.T) {
	dir, k, disk := t.TempDir(), testKeys(t), &fullDisk{}
	tr, err := Open(Options{Dir: dir, Keys: k, Reserve: disk.reserve})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Record(context.Background(), owedRecord("req-1", PhaseIntent, 4<<10)); err != nil {
		t.Fatal(err)
	}
	disk.full.Store(true)
	// Records smaller than the outcome fill the reserved chunk (1 MiB),
	// from 16 writers until the disk refuses them.
	var refused atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 200 {
				err := tr.Record(context.Background(), owedRecord(fmt.Sprintf("other-%d-%d", w, i), PhaseDone, 1<<10))
				if err != nil {
					if !errors.Is(err, errNoSpace) {
						t.Errorf("filler: %v, want no space", err)
					}
					refused.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Fatal("a full disk never refused a record")
	}
	// Then one at a time, so what is left is less than one of them.
	for i := 0; ; i++ {
		if err := tr.Record(context.Background(), owedRecord(fmt.Sprintf("last-%d", i), PhaseDone, 1<<10)); err != nil {
			break
		}
	}
	if err := tr.Record(context.Background(), owedRecord("req-1", PhaseDone, 4<<10)); err != nil {
		t.Fatalf("the admitted change's outcome was refused: %v", err)
	}
	disk.full.Store(false)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := Verify(mustFiles(t, dir), VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || res.Problem != nil {
		t.Fatalf("verify: %v %v", err, res.Problem)
	}
}

// TestRotationKeepsOwedSpace: a rotation due while an outcome is owed and
// the disk is full stays in the current file (whose reserved space holds
// the outcome) instead of starting one with nothing reserved; it happens
// once the disk has room again, and the chain verifies.
func TestRotationKeepsOwedSpace(t *testing.T) {
	dir, k, disk := t.TempDir(), testKeys(t), &fullDisk{}
	tr, err := Open(Options{Dir: dir, Keys: k, Reserve: disk.reserve, MaxFileSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	// The intent takes the file past its size limit.
	if err := tr.Record(context.Background(), owedRecord("req-2", PhaseIntent, 8<<10)); err != nil {
		t.Fatal(err)
	}
	disk.full.Store(true)
	if err := tr.Record(context.Background(), owedRecord("req-2", PhaseDone, 8<<10)); err != nil {
		t.Fatalf("the outcome was refused at a rotation on a full disk: %v", err)
	}
	if files := mustFiles(t, dir); len(files) != 1 {
		t.Fatalf("files %v: the failed rotation left a file behind", files)
	}
	disk.full.Store(false)
	if err := tr.Record(context.Background(), owedRecord("req-3", PhaseDone, 10)); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	files := mustFiles(t, dir)
	if len(files) != 2 {
		t.Fatalf("files %v, want the rotation done once the disk had room", files)
	}
	res, err := Verify(files, VerifyOptions{PublicKey: k.PublicKey()})
	if err != nil || res.Problem != nil || res.Records != 3 {
		t.Fatalf("verify: %+v %v", res, err)
	}
}
