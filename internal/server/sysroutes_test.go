package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/bolt"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// TestRotateKeyringAndRewrapOverHTTP: a key and a ciphertext made before
// POST /v1/sys/rotate-keyring and after it both survive a restart; after
// POST /v1/sys/rewrap every stored entry is sealed under the new term, and
// both still decrypt after another restart. Only the root token (or a
// policy naming the actions) may call either route.
func TestRotateKeyringAndRewrapOverHTTP(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	type sample struct {
		ct    []byte
		plain string
	}
	var samples []sample
	encrypt := func(addr, tok, plain string) {
		t.Helper()
		st, raw := doJSON(t, "POST", addr+"/v1/keys", tok, client.CreateKeyRequest{})
		if st != http.StatusCreated {
			t.Fatalf("create key: %d %s", st, raw)
		}
		var k client.Key
		json.Unmarshal(raw, &k)
		st, raw = doJSON(t, "POST", addr+"/v1/kms/encrypt", tok, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte(plain)})
		if st != http.StatusOK {
			t.Fatalf("encrypt: %d %s", st, raw)
		}
		var out client.EncryptResponse
		json.Unmarshal(raw, &out)
		samples = append(samples, sample{out.Ciphertext, plain})
	}
	decryptAll := func(addr, tok string) {
		t.Helper()
		for _, s := range samples {
			st, raw := doJSON(t, "POST", addr+"/v1/kms/decrypt", tok, client.DecryptRequest{Ciphertext: s.ct})
			var out client.DecryptResponse
			json.Unmarshal(raw, &out)
			if st != http.StatusOK || string(out.Plaintext) != s.plain {
				t.Fatalf("decrypt %q: %d %s", s.plain, st, raw)
			}
		}
	}

	ban, stop := runServer(t, server.Config{DevDir: dir})
	encrypt(ban.Addr, ban.RootToken, "before the rotation")
	st, raw := doJSON(t, "POST", ban.Addr+"/v1/auth/token/create", ban.RootToken, client.CreateTokenRequest{DisplayName: "no policies"})
	if st != http.StatusOK && st != http.StatusCreated {
		t.Fatalf("token create: %d %s", st, raw)
	}
	var plain client.CreateTokenResponse
	json.Unmarshal(raw, &plain)
	for _, p := range []string{"/v1/sys/rotate-keyring", "/v1/sys/rewrap"} {
		if st, raw := doJSON(t, "POST", ban.Addr+p, plain.Token, nil); st != http.StatusForbidden {
			t.Fatalf("%s by a token without policies: %d %s", p, st, raw)
		}
	}
	st, raw = doJSON(t, "POST", ban.Addr+"/v1/sys/rotate-keyring", ban.RootToken, nil)
	var rot client.RotateKeyringResponse
	json.Unmarshal(raw, &rot)
	if st != http.StatusOK || rot.Term != 2 {
		t.Fatalf("rotate-keyring: %d %s", st, raw)
	}
	encrypt(ban.Addr, ban.RootToken, "after the rotation")
	stop()

	ban, stop = runServer(t, server.Config{DevDir: dir})
	decryptAll(ban.Addr, ban.RootToken)
	st, raw = doJSON(t, "POST", ban.Addr+"/v1/sys/rewrap", ban.RootToken, nil)
	var rw client.RewrapResponse
	json.Unmarshal(raw, &rw)
	if st != http.StatusOK || rw.Term != 2 || rw.Rewrapped == 0 || rw.Scanned != rw.Rewrapped+rw.Current {
		t.Fatalf("rewrap: %d %s", st, raw)
	}
	stop()

	// Every entry outside core/ is now sealed under term 2.
	be, err := bolt.Open(ban.StoragePath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	paths, _ := be.List(ctx, "")
	for _, p := range paths {
		if strings.HasPrefix(p, "core/") {
			continue
		}
		e, err := be.Get(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if term := binary.BigEndian.Uint32(e.Value[1:5]); term != 2 {
			t.Errorf("%s is under keyring term %d after rewrap", p, term)
		}
	}
	be.Close()

	ban, stop = runServer(t, server.Config{DevDir: dir})
	defer stop()
	decryptAll(ban.Addr, ban.RootToken)
}

// TestUnsealRefusesConflictingShareOverHTTP: a share whose id was already
// submitted, from another server, is refused with a 400 that says so, and
// the valid share submitted first still counts.
func TestUnsealRefusesConflictingShareOverHTTP(t *testing.T) {
	ctx := context.Background()
	s := sys.New(barrier.New(inmem.New()), nil)
	res, err := s.Init(ctx, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	other, err := sys.New(barrier.New(inmem.New()), nil).Init(ctx, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(server.New(s, server.Options{}))
	defer ts.Close()
	if st, raw := doJSON(t, "POST", ts.URL+"/v1/sys/unseal", "", client.UnsealRequest{Share: res.Shares[0]}); st != http.StatusOK {
		t.Fatalf("first share: %d %s", st, raw)
	}
	st, raw := doJSON(t, "POST", ts.URL+"/v1/sys/unseal", "", client.UnsealRequest{Share: other.Shares[0]})
	if st != http.StatusBadRequest || !strings.Contains(string(raw), "already submitted") {
		t.Fatalf("foreign share with a submitted id: %d %s", st, raw)
	}
	st, raw = doJSON(t, "POST", ts.URL+"/v1/sys/unseal", "", client.UnsealRequest{Share: res.Shares[1]})
	var ss client.SealStatus
	json.Unmarshal(raw, &ss)
	if st != http.StatusOK || ss.Sealed {
		t.Fatalf("second valid share: %d %s", st, raw)
	}
}

// gatedBackend is an in-memory backend whose next batch that writes
// target, once armed, waits for release and then fails: a key write stuck
// in storage while other requests arrive.
type gatedBackend struct {
	*inmem.Backend
	target  atomic.Value // string
	armed   atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func (g *gatedBackend) Apply(ctx context.Context, ops ...storage.Op) error {
	for _, op := range ops {
		if t, _ := g.target.Load().(string); op.Key == t && g.armed.CompareAndSwap(true, false) {
			close(g.reached)
			<-g.release
			return errors.New("injected storage failure")
		}
	}
	return g.Backend.Apply(ctx, ops...)
}

// TestSealDuringKeyUpdatesOverHTTP: one key update is stuck in storage
// (holding the key's writer lock) and a second waits behind it when
// POST /v1/sys/seal arrives; if the seal does not wait for them, the server
// is unsealed again before they go on. Afterwards the key must still decrypt
// what it encrypted before and no stored version may be all zero. Before
// the fix the second update stored the material the seal had wiped.
func TestSealDuringKeyUpdatesOverHTTP(t *testing.T) {
	ctx := context.Background()
	be := &gatedBackend{Backend: inmem.New(), reached: make(chan struct{}), release: make(chan struct{})}
	bar := barrier.New(be)
	s := sys.New(bar, nil)
	res, err := s.Init(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(server.New(s, server.Options{}))
	defer ts.Close()
	root := res.RootToken
	unseal := func() {
		t.Helper()
		if st, raw := doJSON(t, "POST", ts.URL+"/v1/sys/unseal", "", client.UnsealRequest{Share: res.Shares[0]}); st != http.StatusOK {
			t.Fatalf("unseal: %d %s", st, raw)
		}
	}
	unseal()
	st, raw := doJSON(t, "POST", ts.URL+"/v1/keys", root, client.CreateKeyRequest{})
	if st != http.StatusCreated {
		t.Fatalf("create: %d %s", st, raw)
	}
	var k client.Key
	json.Unmarshal(raw, &k)
	st, raw = doJSON(t, "POST", ts.URL+"/v1/kms/encrypt", root, client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("before")})
	if st != http.StatusOK {
		t.Fatalf("encrypt: %d %s", st, raw)
	}
	var ct client.EncryptResponse
	json.Unmarshal(raw, &ct)

	be.target.Store("keys/" + k.ID)
	be.armed.Store(true)
	update := func(desc string, done chan<- int) {
		st, _ := doJSON(t, "PATCH", ts.URL+"/v1/keys/"+k.ID, root, client.UpdateKeyRequest{Description: &desc})
		done <- st
	}
	first, second := make(chan int, 1), make(chan int, 1)
	go update("first", first)
	<-be.reached
	go update("second", second)
	time.Sleep(100 * time.Millisecond) // the second update waits for the key's writer lock
	sealed := make(chan int, 1)
	go func() { st, _ := doJSON(t, "POST", ts.URL+"/v1/sys/seal", root, nil); sealed <- st }()
	select {
	case st := <-sealed:
		sealed <- st
		unseal() // the seal did not wait: unseal before the writers go on
	case <-time.After(300 * time.Millisecond):
	}
	close(be.release)
	t.Logf("updates overlapping the seal: %d, %d", <-first, <-second)
	<-sealed

	s.Seal()
	unseal()
	checkStoredKeys(t, bar)
	st, raw = doJSON(t, "POST", ts.URL+"/v1/kms/decrypt", root, client.DecryptRequest{Ciphertext: ct.Ciphertext})
	var out client.DecryptResponse
	json.Unmarshal(raw, &out)
	if st != http.StatusOK || string(out.Plaintext) != "before" {
		t.Fatalf("decrypting a ciphertext made before the seal: %d %s", st, raw)
	}
}

// checkStoredKeys fails when a stored key that is not deleted has a version
// whose material is missing or all zero.
func checkStoredKeys(t *testing.T, bar *barrier.Barrier) {
	t.Helper()
	ctx := context.Background()
	paths, err := bar.List(ctx, "keys/")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		e, err := bar.Get(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			State    client.KeyState `json:"state"`
			Versions []struct {
				Version  uint32 `json:"version"`
				Material []byte `json:"material"`
			} `json:"versions"`
		}
		json.Unmarshal(e.Value, &rec)
		for _, v := range rec.Versions {
			if rec.State != client.KeyDeleted && (len(v.Material) != 32 || bytes.Equal(v.Material, make([]byte, 32))) {
				t.Errorf("%s version %d: stored material %x", p, v.Version, v.Material)
			}
		}
	}
}
