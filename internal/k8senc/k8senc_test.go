package k8senc

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
)

const (
	key1 = "0b6f7e0e-1c6d-4c3a-9a53-1f5a3c1f7a10:1"
	key2 = "0b6f7e0e-1c6d-4c3a-9a53-1f5a3c1f7a10:2"
)

func kmsV2(t testing.TB, name, keyID string) []byte {
	t.Helper()
	b, err := proto.Marshal(&kmstypes.EncryptedObject{EncryptedData: []byte("ciphertext"), KeyID: keyID, EncryptedDEKSource: []byte("dek")})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("k8s:enc:kms:v2:"+name+":"), b...)
}

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		want Value
	}{
		{"protobuf", []byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret"), Value{Type: TypeIdentity, Encoding: "protobuf"}},
		{"json", []byte(`{"kind":"Secret"}`), Value{Type: TypeIdentity, Encoding: "json"}},
		{"json with space", []byte(" \n{\"kind\":\"Secret\"}"), Value{Type: TypeIdentity, Encoding: "json"}},
		{"cbor", []byte{0xd9, 0xd9, 0xf7, 0xa1}, Value{Type: TypeIdentity, Encoding: "cbor"}},
		{"kms v2", kmsV2(t, "coffer", key1), Value{Type: TypeKMS, Version: "v2", Name: "coffer", KeyID: key1}},
		{"kms v1", []byte("k8s:enc:kms:v1:old-kms:\x00\x03dekciphertext"), Value{Type: TypeKMS, Version: "v1", Name: "old-kms"}},
		{"aescbc", []byte("k8s:enc:aescbc:v1:key1:\x01\x02\x03"), Value{Type: TypeAESCBC, Version: "v1", Name: "key1"}},
		{"aesgcm", []byte("k8s:enc:aesgcm:v1:gcmkey:\x01\x02"), Value{Type: TypeAESGCM, Version: "v1", Name: "gcmkey"}},
		{"secretbox", []byte("k8s:enc:secretbox:v1:sb:\x01"), Value{Type: TypeSecretbox, Version: "v1", Name: "sb"}},
		{"unknown type", []byte("k8s:enc:rot13:v1:x:abc"), Value{Type: TypeUnknown}},
		{"truncated prefix", []byte("k8s:enc:kms:v2"), Value{Type: TypeUnknown}},
		{"garbage", []byte("\x01\x02"), Value{Type: TypeUnknown}},
		{"empty", nil, Value{Type: TypeUnknown}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.data); got != c.want {
				t.Errorf("Classify = %+v, want %+v", got, c.want)
			}
		})
	}
	// A kms v2 value whose payload is not an EncryptedObject is flagged.
	bad := Classify([]byte("k8s:enc:kms:v2:coffer:\xff\xff\xff"))
	if bad.Type != TypeKMS || bad.Invalid == "" {
		t.Errorf("bad kms v2 payload: %+v, want Invalid set", bad)
	}
	if p := Classify(kmsV2(t, "coffer", key1)).Provider(); p != "kms:v2:coffer" {
		t.Errorf("Provider = %q", p)
	}
	if p := Classify([]byte("k8s\x00")).Provider(); p != "identity" {
		t.Errorf("Provider = %q", p)
	}
}

func TestResourceOf(t *testing.T) {
	for key, want := range map[string]string{
		"/registry/secrets/default/s1":                          "secrets",
		"/registry/configmaps/kube-system/c":                    "configmaps",
		"/registry/namespaces/default":                          "namespaces",
		"/registry/apiregistration.k8s.io/apiservices/v1.":      "apiservices.apiregistration.k8s.io",
		"/registry/example.com/widgets/ns/w":                    "widgets.example.com",
		"/registry/services/specs/default/kubernetes":           "services",
		"/registry/services/endpoints/default/kubernetes":       "endpoints",
		"/other/secrets/default/s1":                             "",
		"/registry/":                                            "",
		"/registry/masterleases/127.0.0.1":                      "masterleases",
		"/registry/ranges/serviceips":                           "ranges",
		"/registry/flowschemas/exempt":                          "flowschemas",
		"/registry/clusterrolebindings/system:basic-user":       "clusterrolebindings",
		"/registry/secrets/default/name.with.dots":              "secrets",
		"/registry/leases/kube-system/apiserver-abc.example.io": "leases",
	} {
		if got := ResourceOf(DefaultPrefix, key); got != want {
			t.Errorf("ResourceOf(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestIsStale(t *testing.T) {
	v1 := Classify(kmsV2(t, "coffer", key1))
	v2 := Classify(kmsV2(t, "coffer", key2))
	other := Classify(kmsV2(t, "other", key2))
	plain := Classify([]byte("k8s\x00"))
	cbc := Classify([]byte("k8s:enc:aescbc:v1:k:x"))
	for _, c := range []struct {
		v                 Value
		current, provider string
		want              bool
	}{
		{v1, key2, "", true},
		{v2, key2, "", false},
		{v2, key2, "coffer", false},
		{other, key2, "coffer", true},
		{other, key2, "", false},
		{v1, "", "", false}, // unknown current key_id: not known stale
		{plain, key2, "", true},
		{plain, "", "", true},
		{cbc, key2, "", true},
	} {
		if got := IsStale(c.v, c.current, c.provider); got != c.want {
			t.Errorf("IsStale(%s %s, current %q, provider %q) = %v, want %v", c.v.Provider(), c.v.KeyID, c.current, c.provider, got, c.want)
		}
	}
}

func TestInferCurrentKeyID(t *testing.T) {
	const other = "9d1c2f4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f:7"
	for _, c := range []struct {
		ids     []string
		want    string
		wantWhy bool
	}{
		{nil, "", false},
		{[]string{key1}, key1, false},
		{[]string{key1, key2, key1}, key2, false},
		{[]string{"0b6f7e0e-1c6d-4c3a-9a53-1f5a3c1f7a10:10", key2}, "0b6f7e0e-1c6d-4c3a-9a53-1f5a3c1f7a10:10", false}, // numeric, not lexical
		{[]string{key1, other}, "", true},
		{[]string{"vault-key-a", "vault-key-b"}, "", true},
		{[]string{"vault-key-a"}, "vault-key-a", false},
	} {
		got, why := InferCurrentKeyID(c.ids)
		if got != c.want || (why != "") != c.wantWhy {
			t.Errorf("InferCurrentKeyID(%v) = %q, %q; want %q (reason %v)", c.ids, got, why, c.want, c.wantWhy)
		}
	}
}

// fakeSource is a sorted in-memory etcd.
type fakeSource struct {
	kvs   []KV
	pages int
}

func newFakeSource(m map[string][]byte) *fakeSource {
	s := &fakeSource{}
	for k, v := range m {
		s.kvs = append(s.kvs, KV{k, v})
	}
	slices.SortFunc(s.kvs, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
	return s
}

func (s *fakeSource) Page(_ context.Context, start, end string, limit, rev int64) ([]KV, bool, int64, error) {
	s.pages++
	var out []KV
	for _, kv := range s.kvs {
		if kv.Key >= start && kv.Key < end {
			out = append(out, kv)
		}
	}
	more := int64(len(out)) > limit
	if more {
		out = out[:limit]
	}
	return out, more, 42, nil
}

func statusFixture(t *testing.T) *fakeSource {
	m := map[string][]byte{
		"/registry/namespaces/default":                       []byte("k8s\x00ns"),
		"/registry/secrets/default/plain1":                   []byte("k8s\x00a"),
		"/registry/secrets/default/plain2":                   []byte("{\"kind\":\"Secret\"}"),
		"/registry/secrets/kube-system/cbc":                  []byte("k8s:enc:aescbc:v1:key1:xxxx"),
		"/registry/configmaps/default/old":                   kmsV2(t, "coffer", key1),
		"/registry/example.com/widgets/default/w":            kmsV2(t, "coffer", key2),
		"/registry/secretsx/default/not-a-secret":            []byte("k8s\x00"),
		"/registry/services/specs/default/kubernetes":        []byte("k8s\x00svc"),
		"/registry/services/endpoints/default/kubernetes":    []byte("k8s\x00ep"),
		"/registry/apiregistration.k8s.io/apiservices/v1.":   []byte("{}"),
		"/registry/leases/kube-system/kube-apiserver-abcdef": []byte("k8s\x00lease"),
	}
	for i := range 7 {
		m["/registry/secrets/default/new"+string(rune('a'+i))] = kmsV2(t, "coffer", key2)
	}
	for i := range 3 {
		m["/registry/secrets/default/old"+string(rune('a'+i))] = kmsV2(t, "coffer", key1)
	}
	return newFakeSource(m)
}

func TestStatus(t *testing.T) {
	src := statusFixture(t)
	rep, err := Status(context.Background(), src, StatusOptions{Resources: []string{"secrets", "configmaps", "widgets.example.com"}, PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if src.pages < 5 {
		t.Errorf("read %d pages; the page size of 2 should have taken more", src.pages)
	}
	if rep.CurrentKeyID != key2 || rep.CurrentKeyIDSource != "inferred" || len(rep.Warnings) == 0 {
		t.Errorf("current key_id %q (%s), warnings %v; want %q inferred with a warning", rep.CurrentKeyID, rep.CurrentKeyIDSource, rep.Warnings, key2)
	}
	want := []Row{
		{Resource: "configmaps", Provider: "kms:v2:coffer", KeyID: key1, Count: 1, Stale: true},
		{Resource: "secrets", Provider: "aescbc:v1:key1", Count: 1, Stale: true},
		{Resource: "secrets", Provider: "identity", Count: 2, Stale: true},
		{Resource: "secrets", Provider: "kms:v2:coffer", KeyID: key1, Count: 3, Stale: true},
		{Resource: "secrets", Provider: "kms:v2:coffer", KeyID: key2, Count: 7},
		{Resource: "widgets.example.com", Provider: "kms:v2:coffer", KeyID: key2, Count: 1},
	}
	if !slices.Equal(rep.Rows, want) {
		t.Errorf("rows:\n got %+v\nwant %+v", rep.Rows, want)
	}
	if rep.Total != 15 || rep.Plaintext != 2 || rep.Stale != 7 {
		t.Errorf("total %d plaintext %d stale %d; want 15 2 7", rep.Total, rep.Plaintext, rep.Stale)
	}

	// Everything, with the current key_id given: nothing inferred.
	rep, err = Status(context.Background(), src, StatusOptions{CurrentKeyID: key1, CurrentKeyIDSource: "flag"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.CurrentKeyID != key1 || len(rep.Warnings) != 0 {
		t.Errorf("current %q warnings %v", rep.CurrentKeyID, rep.Warnings)
	}
	byRes := map[string]int{}
	for _, r := range rep.Rows {
		byRes[r.Resource] += r.Count
	}
	for res, n := range map[string]int{"secrets": 13, "namespaces": 1, "services": 1, "endpoints": 1, "apiservices.apiregistration.k8s.io": 1, "secretsx": 1, "leases": 1, "configmaps": 1, "widgets.example.com": 1} {
		if byRes[res] != n {
			t.Errorf("%s: %d objects, want %d (all: %v)", res, byRes[res], n, byRes)
		}
	}
	// With key1 current, the 7 key2 secrets and the widget are stale, the
	// old ones are not.
	for _, r := range rep.Rows {
		if r.KeyID == key1 && r.Stale || r.KeyID == key2 && !r.Stale {
			t.Errorf("row %+v: wrong staleness with current %s", r, key1)
		}
	}

	// Keys of two different Coffer keys: no inference.
	src2 := newFakeSource(map[string][]byte{
		"/registry/secrets/a/x": kmsV2(t, "coffer", key1),
		"/registry/secrets/a/y": kmsV2(t, "coffer", "9d1c2f4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f:1"),
	})
	rep, err = Status(context.Background(), src2, StatusOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.CurrentKeyID != "" || len(rep.Warnings) != 1 || rep.Stale != 0 {
		t.Errorf("two keys: current %q, warnings %v, stale %d", rep.CurrentKeyID, rep.Warnings, rep.Stale)
	}
}

func TestCheckpointResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt")
	c, err := OpenCheckpoint(path, false)
	if err != nil {
		t.Fatal(err)
	}
	refs := []Ref{{"secrets", "default", "a"}, {"secrets", "default", "b"}, {"namespaces", "", "default"}}
	for _, r := range refs {
		if err := c.Mark(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash mid-line leaves a torn line, which is dropped.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("secrets\tdefault\tc-tor")
	f.Close()

	c, err = OpenCheckpoint(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != 3 || !c.Done(refs[0]) || !c.Done(refs[2]) || c.Done(Ref{"secrets", "default", "c-tor"}) {
		t.Fatalf("resumed checkpoint has %d entries: %v", c.Len(), c.done)
	}
	c.Mark(Ref{"secrets", "default", "c"})
	c.Close()
	b, _ := os.ReadFile(path)
	if want := "secrets\tdefault\ta\nsecrets\tdefault\tb\nnamespaces\t\tdefault\nsecrets\tdefault\tc\n"; string(b) != want {
		t.Errorf("file:\n%q\nwant\n%q", b, want)
	}
	// Without --resume the file starts over.
	c, _ = OpenCheckpoint(path, false)
	if c.Len() != 0 {
		t.Errorf("fresh checkpoint has %d entries", c.Len())
	}
	c.Close()
}

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

func secret(ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Secret")
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

type countProgress struct{ started, added, finished int }

func (p *countProgress) Start(string, int64) { p.started++ }
func (p *countProgress) Add(n int)           { p.added += n }
func (p *countProgress) Finish()             { p.finished++ }

func TestMigrate(t *testing.T) {
	var objs []runtime.Object
	for _, n := range []string{"plain", "old", "new", "unknown"} {
		objs = append(objs, secret("default", n))
	}
	objs = append(objs, secret("other", "elsewhere"))
	client := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{secretsGVR: "SecretList"}, objs...)
	var updated []string
	client.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		o := a.(k8stesting.UpdateAction).GetObject().(*unstructured.Unstructured)
		updated = append(updated, o.GetNamespace()+"/"+o.GetName())
		return false, nil, nil
	})
	stored := map[string]Value{
		"default/plain":   Classify([]byte("k8s\x00")),
		"default/old":     Classify(kmsV2(t, "coffer", key1)),
		"default/new":     Classify(kmsV2(t, "coffer", key2)),
		"other/elsewhere": Classify(kmsV2(t, "coffer", key1)),
	}
	lookup := func(_ Resource, ns, name string) (Value, bool) {
		v, ok := stored[ns+"/"+name]
		return v, ok
	}
	res := []Resource{{Name: "secrets", GVR: secretsGVR, Namespaced: true}}
	ckpt := filepath.Join(t.TempDir(), "ckpt")

	// First run: only namespace default, interrupted after... simulate by
	// a checkpoint that already holds "plain".
	c, _ := OpenCheckpoint(ckpt, false)
	c.Mark(Ref{"secrets", "default", "plain"})
	c.Close()
	c, err := OpenCheckpoint(ckpt, true)
	if err != nil {
		t.Fatal(err)
	}
	prog := &countProgress{}
	sum, err := Migrate(context.Background(), MigrateOptions{
		Client: client, Resources: res, Namespace: "default", Stored: lookup, CurrentKeyID: key2,
		Checkpoint: c, Rate: 1000, Progress: prog,
	})
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(updated)
	if want := []string{"default/old", "default/unknown"}; !slices.Equal(updated, want) {
		t.Errorf("updated %v, want %v", updated, want)
	}
	if sum.Listed != 4 || sum.Rewritten != 2 || sum.Current != 1 || sum.Resumed != 1 || sum.Failed != 0 {
		t.Errorf("summary %+v", sum)
	}
	if prog.started != 1 || prog.added != 4 || prog.finished != 1 {
		t.Errorf("progress %+v", prog)
	}

	// Resuming again does nothing in default; all namespaces picks up the
	// one left in "other".
	updated = nil
	c, _ = OpenCheckpoint(ckpt, true)
	sum, err = Migrate(context.Background(), MigrateOptions{Client: client, Resources: res, Stored: lookup, CurrentKeyID: key2, Checkpoint: c})
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(updated, []string{"other/elsewhere"}) || sum.Resumed != 4 || sum.Rewritten != 1 {
		t.Errorf("resume: updated %v, summary %+v", updated, sum)
	}

	// Without etcd knowledge every object is updated.
	updated = nil
	sum, err = Migrate(context.Background(), MigrateOptions{Client: client, Resources: res})
	if err != nil {
		t.Fatal(err)
	}
	if len(updated) != 5 || sum.Rewritten != 5 {
		t.Errorf("blind: updated %v, summary %+v", updated, sum)
	}
}

func TestMigrateConflictAndGone(t *testing.T) {
	client := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{secretsGVR: "SecretList"},
		secret("default", "busy"), secret("default", "gone"), secret("default", "broken"))
	conflicts := 0
	client.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		o := a.(k8stesting.UpdateAction).GetObject().(*unstructured.Unstructured)
		switch o.GetName() {
		case "busy":
			if conflicts < 2 {
				conflicts++
				return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, "busy", errors.New("modified"))
			}
		case "gone":
			return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, "gone")
		case "broken":
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "broken", errors.New("webhook says no"))
		}
		return false, nil, nil
	})
	sum, err := Migrate(context.Background(), MigrateOptions{Client: client, Resources: []Resource{{Name: "secrets", GVR: secretsGVR, Namespaced: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if conflicts != 2 || sum.Rewritten != 1 || sum.Gone != 1 || sum.Failed != 1 || len(sum.Errors) != 1 || !strings.Contains(sum.Errors[0], "webhook says no") {
		t.Errorf("conflicts %d, summary %+v", conflicts, sum)
	}
}

func TestPluginKeyID(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"status":"ok","key_id":"` + key2 + `"}`))
	}))
	defer srv.Close()
	for _, u := range []string{srv.URL, srv.URL + "/", srv.URL + "/readyz", strings.TrimPrefix(srv.URL, "http://")} {
		if id, err := PluginKeyID(context.Background(), u); err != nil || id != key2 {
			t.Errorf("PluginKeyID(%q) = %q, %v", u, id, err)
		}
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"status":"not ready","class":"starting","error":"no health check has run yet","key_id":""}`))
	}))
	defer down.Close()
	if _, err := PluginKeyID(context.Background(), down.URL); err == nil || !strings.Contains(err.Error(), "no health check") {
		t.Errorf("not ready plugin: %v", err)
	}
}
