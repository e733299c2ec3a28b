package barrier

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
)

// TestUnsealRejectsBadSealConfig: the seal configuration is stored in
// plaintext and not authenticated. One outside 1 <= threshold <= shares <=
// 255 must make Unseal fail with an error that names it, never panic (a
// threshold of 0 used to panic in the share recovery).
func TestUnsealRejectsBadSealConfig(t *testing.T) {
	bad := []SealConfig{}
	for _, nt := range [][2]int{{0, 0}, {3, 0}, {3, -1}, {2, 3}, {300, 2}, {256, 256}, {-1, -1}} {
		bad = append(bad, SealConfig{Version: sealConfigVersion, Type: TypeShamir, Shares: nt[0], Threshold: nt[1]})
	}
	// An unknown version is refused as well, whatever the counts say.
	bad = append(bad, SealConfig{Version: 3, Type: TypeShamir, Shares: 3, Threshold: 2})
	for _, cfg := range bad {
		t.Run(fmt.Sprintf("v%d-%d-of-%d", cfg.Version, cfg.Threshold, cfg.Shares), func(t *testing.T) {
			b, be, shares := initBarrier(t, 3, 2)
			b.Seal()
			raw, _ := json.Marshal(cfg)
			if err := be.Apply(ctx, storage.Put(pathSealConfig, raw)); err != nil {
				t.Fatal(err)
			}
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("Unseal panicked: %v", p)
					}
				}()
				for _, s := range shares {
					if _, err = b.Unseal(ctx, s); err != nil {
						break
					}
				}
			}()
			if err == nil || !strings.Contains(err.Error(), "seal configuration") {
				t.Fatalf("unseal with seal configuration %+v: %v", cfg, err)
			}
			if !b.Sealed() || len(b.pending) != 0 {
				t.Fatalf("sealed=%v, %d shares kept", b.Sealed(), len(b.pending))
			}
		})
	}
}

// TestUnsealRefusesConflictingShareID: a share whose id was already
// submitted with a different value is refused, and the first one is kept,
// so a foreign or mistyped share cannot silently replace a valid one.
func TestUnsealRefusesConflictingShareID(t *testing.T) {
	b, _, own := initBarrier(t, 3, 2)
	_, _, foreign := initBarrier(t, 3, 2)
	b.Seal()
	if _, err := b.Unseal(ctx, own[0]); err != nil {
		t.Fatal(err)
	}
	id, _ := shareID([]byte(foreign[0]))
	if oid, _ := shareID([]byte(own[0])); oid != id {
		t.Fatalf("test needs shares with the same id, got %d and %d", oid, id)
	}
	st, err := b.Unseal(ctx, foreign[0])
	if !errors.Is(err, ErrBadShare) || !strings.Contains(err.Error(), "already submitted") {
		t.Fatalf("conflicting share id: %v", err)
	}
	if st.Progress != 1 || !st.Sealed {
		t.Fatalf("after a refused share: %+v", st)
	}
	// The same share again is harmless.
	if st, err := b.Unseal(ctx, own[0]); err != nil || st.Progress != 1 {
		t.Fatalf("repeating a share: %+v %v", st, err)
	}
	if st, err := b.Unseal(ctx, own[1]); err != nil || st.Sealed {
		t.Fatalf("the valid first share was not kept: %+v %v", st, err)
	}
}

// TestUnsealWipesShares: the shares held between submissions are wiped
// when the threshold is reached, on reset, on seal and when a set fails.
func TestUnsealWipesShares(t *testing.T) {
	b, _, own := initBarrier(t, 3, 3)
	_, _, foreign := initBarrier(t, 3, 3)
	b.Seal()
	held := func() [][]byte {
		var out [][]byte
		for _, s := range b.pending {
			out = append(out, s)
		}
		return out
	}
	zero := func(what string, bufs [][]byte) {
		t.Helper()
		for _, s := range bufs {
			if !bytes.Equal(s, make([]byte, len(s))) {
				t.Fatalf("%s: a submitted share was not wiped", what)
			}
		}
	}
	b.Unseal(ctx, own[0])
	b.Unseal(ctx, own[1])
	bufs := held()
	b.ResetUnseal()
	zero("reset", bufs)

	b.Unseal(ctx, foreign[0])
	b.Unseal(ctx, foreign[1])
	bufs = held()
	if _, err := b.Unseal(ctx, foreign[2]); !errors.Is(err, ErrBadShare) {
		t.Fatalf("foreign set: %v", err)
	}
	zero("failed set", bufs)

	b.Unseal(ctx, own[0])
	bufs = held()
	b.Seal()
	zero("seal", bufs)

	b.Unseal(ctx, own[0])
	b.Unseal(ctx, own[1])
	bufs = held()
	if _, err := b.Unseal(ctx, own[2]); err != nil {
		t.Fatal(err)
	}
	zero("unsealed", bufs)
}
