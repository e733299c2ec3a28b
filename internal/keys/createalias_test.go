package keys

import (
	"context"
	"errors"
	"testing"

	"github.com/cofferkms/coffer/internal/storage"
)

// TestCreateAliasRefusals: a key pending deletion takes no new alias (as
// in AWS, and as UpdateAlias), a disabled one does; alias/aws/ names are
// reserved for new aliases, while one already stored still loads and can
// be deleted.
func TestCreateAliasRefusals(t *testing.T) {
	bg := context.Background()
	a, _, store := twoServices(t)
	x, err := a.Create(bg, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ScheduleDeletion(bg, x.ID, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAlias(bg, "alias/doomed", x.ID); !errors.Is(err, ErrPendingDeletion) {
		t.Fatalf("alias to a key pending deletion: %v", err)
	}
	if _, _, err := a.Names("alias/doomed"); err == nil {
		t.Fatal("the refused alias exists")
	}
	if _, err := a.CancelDeletion(bg, x.ID); err != nil {
		t.Fatal(err)
	}
	if k, _ := a.Describe(bg, x.ID); k.State != StateDisabled {
		t.Fatalf("state after cancel: %s", k.State)
	}
	if _, err := a.CreateAlias(bg, "alias/doomed", x.ID); err != nil {
		t.Fatalf("alias to a disabled key: %v", err)
	}

	for _, name := range []string{"alias/aws/s3", "alias/aws/x/y"} {
		if _, err := a.CreateAlias(bg, name, x.ID); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("CreateAlias %s: %v", name, err)
		}
		if _, err := a.Create(bg, CreateRequest{Alias: name}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Create with alias %s: %v", name, err)
		}
		if _, err := a.UpdateAlias(bg, name, x.ID, ""); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("UpdateAlias %s: %v", name, err)
		}
	}
	if _, err := a.CreateAlias(bg, "alias/awsome", x.ID); err != nil {
		t.Fatalf("a name merely starting with aws: %v", err)
	}

	// Stored before the reservation (written here straight to the store):
	// it loads on a fresh service and can be deleted.
	if err := store.Apply(bg, storage.Put("aliases/aws/legacy", []byte(`{"key_id":"`+x.ID+`"}`))); err != nil {
		t.Fatal(err)
	}
	fresh := New(store)
	if err := fresh.Load(bg); err != nil {
		t.Fatalf("a stored alias/aws/ alias stops the load: %v", err)
	}
	if id, _, err := fresh.Names("alias/aws/legacy"); err != nil || id != x.ID {
		t.Fatalf("alias/aws/legacy = %s (%v)", id, err)
	}
	if err := fresh.DeleteAlias(bg, "alias/aws/legacy"); err != nil {
		t.Fatalf("deleting alias/aws/legacy: %v", err)
	}
}
