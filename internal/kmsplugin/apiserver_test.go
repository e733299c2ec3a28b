package kmsplugin

// The real kube-apiserver code path: an EncryptionConfiguration file loaded
// by k8s.io/apiserver's encryptionconfig.LoadEncryptionConfig (what
// kube-apiserver does with --encryption-provider-config). That builds the
// KMS v2 gRPC client, runs the Status probe, generates a seed, has the
// plugin wrap it, and returns the storage transformers. The plugin talks to
// a real Coffer server on loopback.
//
// Timing facts from k8s.io/apiserver v0.37.2
// (pkg/server/options/encryptionconfig/config.go) this test relies on:
//
//   - kmsv2PluginProbe.check caches its last answer: 20s after a success
//     (kmsPluginHealthzPositiveTTL), 3s after a failure
//     (kmsPluginHealthzNegativeTTL). A key_id change is only noticed by a
//     probe check, so a running apiserver picks up a rotation at the earliest
//     20s after its previous successful probe (on its own, the background
//     poll runs every kmsv2PluginHealthzPositiveInterval = 1m).
//   - A seed stays usable for writes until 3m (kmsv2PluginWriteDEKSourceMaxTTL)
//     after the last successful probe, even while the plugin is unhealthy.
//     That expiry uses envelopekmsv2.GetNowFunc, which the test moves forward
//     with SetNowFuncForTests instead of waiting 3 minutes.

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
	envelopekmsv2 "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/cofferkms/coffer/client"
)

// apiserverPatience bounds the waits below for a condition that holds
// within seconds (a 100ms plugin health check, the apiserver's 3s and 20s
// probe caches). They poll and go on as soon as it holds; the bound is
// long so that a loaded CI machine is not mistaken for a broken plugin.
const apiserverPatience = 3 * time.Minute

const kmsProviderName = "coffer" // the test's only KMS provider name (SetNowFuncForTests is per name)

const encryptionConfigTemplate = `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - kms:
          apiVersion: v2
          name: %s
          endpoint: unix://%s
          timeout: 3s
      - identity: {}
`

// apiserverSide is one "kube-apiserver": the transformer for secrets and the
// kms-providers healthz check, as LoadEncryptionConfig returns them.
type apiserverSide struct {
	tr     value.Transformer
	health func() error
	cancel context.CancelFunc
}

func loadAPIServer(t *testing.T, socket, id string) *apiserverSide {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "encryption-config.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, encryptionConfigTemplate, kmsProviderName, socket), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ec, err := encryptionconfig.LoadEncryptionConfig(ctx, path, false, id)
	if err != nil {
		cancel()
		t.Fatalf("LoadEncryptionConfig: %v", err)
	}
	tr := ec.Transformers[schema.GroupResource{Resource: "secrets"}]
	if tr == nil {
		t.Fatalf("no transformer for secrets in %v", ec.Transformers)
	}
	if len(ec.HealthChecks) != 1 {
		t.Fatalf("want 1 (kms-providers) health check, got %d", len(ec.HealthChecks))
	}
	hc := ec.HealthChecks[0]
	return &apiserverSide{
		tr:     tr,
		health: func() error { return hc.Check(httptest.NewRequest("GET", "/healthz", nil)) },
		cancel: cancel,
	}
}

func (a *apiserverSide) write(name string, plaintext []byte) ([]byte, error) {
	return a.tr.TransformToStorage(context.Background(), plaintext, value.DefaultContext("/registry/secrets/default/"+name))
}

func (a *apiserverSide) read(name string, stored []byte) ([]byte, bool, error) {
	return a.tr.TransformFromStorage(context.Background(), stored, value.DefaultContext("/registry/secrets/default/"+name))
}

const storedPrefix = "k8s:enc:kms:v2:" + kmsProviderName + ":"

// storedKeyID decodes the EncryptedObject the KMS v2 transformer wrote.
func storedKeyID(t *testing.T, stored []byte) *kmstypes.EncryptedObject {
	t.Helper()
	rest, ok := bytes.CutPrefix(stored, []byte(storedPrefix))
	if !ok {
		t.Fatalf("stored value does not start with %q: %q", storedPrefix, truncate(string(stored)))
	}
	var o kmstypes.EncryptedObject
	if err := proto.Unmarshal(rest, &o); err != nil {
		t.Fatalf("stored value is not an EncryptedObject: %v", err)
	}
	return &o
}

func TestAPIServerEnvelope(t *testing.T) {
	t.Parallel()
	start := time.Now()

	// Expiry of the write seed follows this clock (GetNowFunc).
	var skew atomic.Int64
	t.Cleanup(envelopekmsv2.SetNowFuncForTests(kmsProviderName, func() time.Time {
		return time.Now().Add(time.Duration(skew.Load()))
	}))

	dir := shortTempDir(t)
	srv := startCoffer(t, dir, "127.0.0.1:0", "")
	c := newCofferClient(t, srv)
	ctx := context.Background()
	key, err := c.CreateKey(ctx, client.CreateKeyRequest{Alias: "alias/k8s"})
	if err != nil {
		t.Fatal(err)
	}
	sp := servePlugin(t, Config{Coffer: c, Key: "alias/k8s", HealthInterval: 100 * time.Millisecond, Timeout: time.Second})
	if _, _, err := sp.P.Health(); err != nil {
		t.Fatalf("plugin not healthy after its first check: %v", err)
	}
	keyID1 := KeyID(key.ID, 1)

	api := loadAPIServer(t, sp.Socket, "apiserver-a")
	if err := api.health(); err != nil {
		t.Fatalf("kms-providers healthz: %v", err)
	}

	// --- Round trip.
	secret := []byte(`{"kind":"Secret","data":{"password":"hunter2-very-secret"}}`)
	stored1, err := api.write("s1", secret)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.HasPrefix(stored1, []byte(storedPrefix)) {
		t.Fatalf("stored value starts with %q, want %q", truncate(string(stored1)), storedPrefix)
	}
	if bytes.Contains(stored1, []byte("hunter2")) {
		t.Fatal("the stored value contains the plaintext")
	}
	o1 := storedKeyID(t, stored1)
	if o1.KeyID != keyID1 {
		t.Fatalf("stored key_id %q, want %q", o1.KeyID, keyID1)
	}
	if string(o1.Annotations[AnnotationVersion]) != EnvelopeVersion || len(o1.Annotations) != 1 {
		t.Fatalf("stored annotations %v", o1.Annotations)
	}
	if o1.EncryptedDEKSourceType != kmstypes.EncryptedDEKSourceType_HKDF_SHA256_XNONCE_AES_GCM_SEED {
		t.Fatalf("DEK source type %v, want an HKDF seed", o1.EncryptedDEKSourceType)
	}
	if n := len(o1.EncryptedDEKSource); n == 0 || n > MaxCiphertext {
		t.Fatalf("wrapped seed is %d bytes", n)
	}
	got, stale, err := api.read("s1", stored1)
	if err != nil || !bytes.Equal(got, secret) || stale {
		t.Fatalf("read: %q stale=%v err=%v", got, stale, err)
	}
	// The authenticated data binds the value to its etcd key.
	if _, _, err := api.read("other", stored1); err == nil {
		t.Fatal("a value read under another etcd key decrypted")
	}
	// Seeds are reused: a second write carries the same wrapped seed.
	stored1b, err := api.write("s1b", []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(storedKeyID(t, stored1b).EncryptedDEKSource, o1.EncryptedDEKSource) {
		t.Error("a second write made a new seed without a key_id change")
	}

	// --- Tampered stored values fail with an error, never a panic.
	for name, mutate := range map[string]func([]byte) []byte{
		"data byte flipped": func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"truncated":         func(b []byte) []byte { return b[:len(b)-5] },
		"garbage after prefix": func(b []byte) []byte {
			return append([]byte(storedPrefix), bytes.Repeat([]byte{0xff}, 64)...)
		},
		"wrapped seed flipped": func(b []byte) []byte {
			o := storedKeyID(t, b)
			o.EncryptedDEKSource[len(o.EncryptedDEKSource)-1] ^= 1
			out, _ := proto.Marshal(o)
			return append([]byte(storedPrefix), out...)
		},
		"key_id of another version": func(b []byte) []byte {
			o := storedKeyID(t, b)
			o.KeyID = KeyID(key.ID, 2)
			out, _ := proto.Marshal(o)
			return append([]byte(storedPrefix), out...)
		},
		"annotation changed": func(b []byte) []byte {
			o := storedKeyID(t, b)
			o.Annotations = map[string][]byte{AnnotationVersion: []byte("2")}
			out, _ := proto.Marshal(o)
			return append([]byte(storedPrefix), out...)
		},
	} {
		bad := mutate(bytes.Clone(stored1))
		if out, _, err := api.read("s1", bad); err == nil {
			t.Errorf("tampered (%s): decrypted to %q", name, out)
		} else {
			t.Logf("tampered (%s): %v", name, err)
		}
	}

	// --- Rotation. The plugin sees the new version at its next health
	// check (100ms); the apiserver sees it at its next probe, which caches
	// a success for 20s.
	if _, err := c.RotateKey(ctx, "alias/k8s"); err != nil {
		t.Fatal(err)
	}
	keyID2 := KeyID(key.ID, 2)
	waitFor(t, apiserverPatience, "plugin key_id after rotation", func() error {
		if k, _, _ := sp.P.Health(); k != keyID2 {
			return fmt.Errorf("key_id %q", k)
		}
		return nil
	})
	rotatedAt := time.Now()
	var stored2 []byte
	waitFor(t, apiserverPatience, "apiserver writes with the new key_id", func() error {
		if err := api.health(); err != nil {
			return err
		}
		b, err := api.write("s2", []byte("after rotation"))
		if err != nil {
			return err
		}
		if k := storedKeyID(t, b).KeyID; k != keyID2 {
			return fmt.Errorf("new writes still carry %q", k)
		}
		stored2 = b
		return nil
	})
	t.Logf("rotation: plugin Status reported %s at once; the apiserver wrote with it %s later (%s after its first probe)",
		keyID2, time.Since(rotatedAt).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	if bytes.Equal(storedKeyID(t, stored2).EncryptedDEKSource, o1.EncryptedDEKSource) {
		t.Error("the rotated key_id kept the old seed")
	}
	if got, stale, err := api.read("s1", stored1); err != nil || !bytes.Equal(got, secret) || !stale {
		t.Fatalf("old value after rotation: %q stale=%v err=%v (want it to decrypt and be marked stale)", got, stale, err)
	}
	if got, stale, err := api.read("s2", stored2); err != nil || string(got) != "after rotation" || stale {
		t.Fatalf("new value: %q stale=%v err=%v", got, stale, err)
	}
	// A fresh apiserver (no cached seeds) also reads both versions, so the
	// plugin's Decrypt really accepts version 1 after the rotation.
	fresh := loadAPIServer(t, sp.Socket, "apiserver-b")
	for name, st := range map[string][]byte{"s1": stored1, "s2": stored2} {
		if _, _, err := fresh.read(name, st); err != nil {
			t.Fatalf("fresh apiserver reading %s: %v", name, err)
		}
	}
	fresh.cancel()

	// --- Coffer down.
	hostPort, token := srv.HostPort(), srv.Token
	srv.Stop()
	waitFor(t, apiserverPatience, "plugin unhealthy with Coffer down", func() error {
		if _, class, err := sp.P.Health(); err == nil || class != "unreachable" {
			return fmt.Errorf("class %q err %v", class, err)
		}
		return nil
	})
	_, class, herr := sp.P.Health()
	t.Logf("Coffer down: plugin health class %q: %v", class, herr)
	// The running apiserver coasts on its cached seed: writes keep working
	// (until 3m after its last good probe) and reads of values whose seed it
	// has cached work; its healthz still answers from the 20s cache.
	if _, err := api.write("s3", []byte("while down")); err != nil {
		t.Errorf("write with a cached seed while Coffer is down: %v", err)
	}
	if _, _, err := api.read("s1", stored1); err != nil {
		t.Errorf("read of a cached-seed value while Coffer is down: %v", err)
	}
	t.Logf("Coffer down: apiserver healthz (cached) = %v", api.health())
	// Once the seed's write lifetime is over, writes fail.
	skew.Store(int64(4 * time.Minute))
	if _, err := api.write("s3", []byte("while down")); err == nil {
		t.Error("write succeeded with an expired seed while Coffer is down")
	} else if !strings.Contains(err.Error(), "expired") {
		t.Errorf("write with an expired seed: %v", err)
	} else {
		t.Logf("Coffer down, seed expired: write error: %v", err)
	}
	skew.Store(0)
	// An apiserver that starts while Coffer is down has no seed: writes and
	// reads of existing data fail, and its healthz fails at once.
	cold := loadAPIServer(t, sp.Socket, "apiserver-c")
	if _, err := cold.write("s4", []byte("x")); err == nil {
		t.Error("cold apiserver wrote without a seed while Coffer is down")
	} else {
		t.Logf("Coffer down, cold apiserver write: %v", err)
	}
	if _, _, err := cold.read("s1", stored1); err == nil {
		t.Error("cold apiserver read without the plugin")
	} else {
		t.Logf("Coffer down, cold apiserver read: %v", err)
	}
	if err := cold.health(); err == nil {
		t.Error("cold apiserver healthz ok while Coffer is down")
	} else {
		t.Logf("Coffer down, cold apiserver healthz: %v", err)
	}

	// --- Coffer back on the same dev dir and port.
	srv2 := startCoffer(t, dir, hostPort, token)
	if srv2.Addr != srv.Addr {
		t.Fatalf("restarted on %s, want %s", srv2.Addr, srv.Addr)
	}
	waitFor(t, apiserverPatience, "plugin healthy after Coffer restart", func() error {
		k, _, err := sp.P.Health()
		if err == nil && k != keyID2 {
			return fmt.Errorf("key_id %q after restart", k)
		}
		return err
	})
	// The cold apiserver's failed probe is cached for 3s; then it recovers.
	waitFor(t, apiserverPatience, "cold apiserver recovers", func() error {
		if err := cold.health(); err != nil {
			return err
		}
		b, err := cold.write("s4", []byte("after restart"))
		if err != nil {
			return err
		}
		if k := storedKeyID(t, b).KeyID; k != keyID2 {
			return fmt.Errorf("cold apiserver writes with %q", k)
		}
		return nil
	})
	for name, st := range map[string][]byte{"s1": stored1, "s2": stored2} {
		if got, _, err := cold.read(name, st); err != nil || len(got) == 0 {
			t.Fatalf("after restart, reading %s: %v", name, err)
		}
	}
	if _, err := api.write("s5", []byte("after restart")); err != nil {
		t.Fatalf("first apiserver write after restart: %v", err)
	}
	t.Logf("total %s", time.Since(start).Round(100*time.Millisecond))
}
