package server_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
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
