package secrets

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/storage"
)

// A purge marker left next to a live secret (the secret was undeleted, or
// the marker outlived its batch) never purges it, whatever the clock says,
// and the marker is cleaned up.
func TestPurgeSkipsLiveSecretWithMarker(t *testing.T) {
	e := newEnv(t)
	e.put(t, "live", map[string]string{"k": "v"})
	old := e.clk.now().Add(time.Hour).Format(time.RFC3339Nano)
	if err := e.bar.Apply(ctx, storage.Put(purgePrefix+"live", []byte(old))); err != nil {
		t.Fatal(err)
	}
	e.clk.add(MaxWindow + 24*time.Hour)
	if n, err := e.svc.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("purge with a marker of a live secret: %d %v", n, err)
	}
	if got, err := e.svc.Get(ctx, "live", 0, ""); err != nil || got.Fields["k"] != "v" {
		t.Fatalf("the live secret after the purge: %v", err)
	}
	if _, err := e.bar.Get(ctx, purgePrefix+"live"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the stale marker is still stored: %v", err)
	}
}

// Lowering max_versions while a rotation holds a pending version keeps
// it, with current and previous: pruning never destroys a staged version.
func TestPruneKeepsPendingVersion(t *testing.T) {
	e := newEnv(t)
	for range 4 {
		e.put(t, "s", map[string]string{"k": "v"})
	}
	// The state in the middle of a rotation: 4 is pending, 3 current.
	if _, err := e.svc.update(ctx, "s", func(m *meta, _ time.Time) ([]storage.Op, error) {
		m.Current, m.Previous, m.Pending = 3, 2, 4
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	one := 1
	md, err := e.svc.UpdateMetadata(ctx, "s", MetadataUpdate{MaxVersions: &one})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range md.Versions {
		if v.Destroyed != (v.Version == 1) {
			t.Fatalf("version %d (stages %v) destroyed=%v; only unstaged version 1 may go", v.Version, v.Stages, v.Destroyed)
		}
	}
	if _, err := e.svc.Get(ctx, "s", 0, StagePending); err != nil {
		t.Fatalf("the pending version after the prune: %v", err)
	}
}

// A field value never appears in the error of a refused write: too large,
// too many fields, or a bad field name next to it.
func TestRefusedWriteErrorsHoldNoValue(t *testing.T) {
	e := newEnv(t)
	const planted = "planted-value-c0ffee"
	many := map[string]string{}
	for i := range MaxFields + 1 {
		many["f"+strings.Repeat("x", i%50)+string(rune('a'+i%26))+string(rune('a'+i/26))] = planted
	}
	for name, f := range map[string]map[string]string{
		"too large":   {"k": planted + strings.Repeat("x", MaxVersionBytes)},
		"too many":    many,
		"bad name":    {"bad name": planted, "k": planted},
		"long name":   {strings.Repeat("n", MaxFieldName+1): planted},
		"empty name":  {"": planted},
		"slash name":  {"a/b": planted},
		"escape name": {"a\x00": planted},
	} {
		_, err := e.svc.Put(ctx, PutRequest{Name: "s", Fields: f})
		if err == nil {
			t.Fatalf("%s: written", name)
		}
		if strings.Contains(err.Error(), planted) {
			t.Fatalf("%s: the error holds the value: %.200s", name, err)
		}
	}
	if _, err := e.svc.Describe(ctx, "s"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused write created the secret: %v", err)
	}
}
