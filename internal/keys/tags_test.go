package keys

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
)

// TestChangeTagsConcurrent: concurrent changes of distinct tags are all
// kept, on the cache and in the store.
func TestChangeTagsConcurrent(t *testing.T) {
	ctx := context.Background()
	a, _, store := twoServices(t)
	k, err := a.Create(ctx, CreateRequest{Tags: map[string]string{"keep": "1", "drop": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 24
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var remove []string
			if i == 0 {
				remove = []string{"drop"}
			}
			if _, err := a.ChangeTags(ctx, k.ID, map[string]string{fmt.Sprint("t", i): fmt.Sprint(i)}, remove); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	want := map[string]string{"keep": "1"}
	for i := range n {
		want[fmt.Sprint("t", i)] = fmt.Sprint(i)
	}
	got, _ := a.Describe(ctx, k.ID)
	if !maps.Equal(got.Tags, want) {
		t.Fatalf("tags %v, want %v", got.Tags, want)
	}
	fresh := New(store)
	if err := fresh.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := fresh.Describe(ctx, k.ID); !maps.Equal(got.Tags, want) {
		t.Fatalf("stored tags %v, want %v", got.Tags, want)
	}
}

// TestChangeTagsBounds: the key may end with MaxTags tags, not more;
// a bad tag key or value changes nothing.
func TestChangeTagsBounds(t *testing.T) {
	ctx := context.Background()
	a, _, _ := twoServices(t)
	tags := map[string]string{}
	for i := range MaxTags - 1 {
		tags[fmt.Sprint("t", i)] = ""
	}
	k, err := a.Create(ctx, CreateRequest{Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ChangeTags(ctx, k.ID, map[string]string{"x": "1", "y": "2"}, nil); !errors.Is(err, ErrTooManyTags) || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("one tag over the limit: %v", err)
	}
	// Replacing and removing in one change may stay within it.
	if _, err := a.ChangeTags(ctx, k.ID, map[string]string{"x": "1", "y": "2"}, []string{"t0"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		set    map[string]string
		remove []string
	}{
		{map[string]string{"": "v"}, nil},
		{map[string]string{string(make([]byte, 129)): "v"}, nil},
		{map[string]string{"k": string(make([]byte, 257))}, nil},
		{nil, []string{""}},
	} {
		if _, err := a.ChangeTags(ctx, k.ID, c.set, c.remove); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("change %v -%v: %v, want invalid argument", c.set, c.remove, err)
		}
	}
	if got, _ := a.Describe(ctx, k.ID); len(got.Tags) != MaxTags {
		t.Fatalf("%d tags, want %d", len(got.Tags), MaxTags)
	}
	if _, err := a.ChangeTags(ctx, "alias/none", map[string]string{"a": "b"}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
}
