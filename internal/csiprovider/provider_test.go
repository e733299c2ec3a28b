package csiprovider

// The provider is driven through its gRPC API on a unix socket, as the
// Secrets Store CSI Driver calls it, against a real Coffer dev server whose
// Kubernetes login verifies service-account tokens with a test JWKS.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/server"
)

const testIssuer = "https://kind.example"

type env struct {
	t      *testing.T
	addr   string
	root   *client.Client
	key    *ecdsa.PrivateKey
	socket string
	grpc   v1alpha1.CSIDriverProviderClient
	logs   *strings.Builder

	mu     sync.Mutex
	issued []string // role tokens the provider built clients with
}

// newEnv starts a Coffer dev server, registers the cluster "kind" (JWKS),
// a policy letting a pod read its namespace's secrets, a role "csi"
// trusting every service account of the cluster, and serves a provider on a
// unix socket.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan server.Banner, 1)
	go func() {
		done <- server.Run(ctx, server.Config{Dev: true, DevDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler),
			func(b server.Banner) { ready <- b })
	}()
	e := &env{t: t, logs: &strings.Builder{}}
	var rootToken string
	select {
	case b := <-ready:
		e.addr, rootToken = b.Addr, b.RootToken
	case err := <-done:
		cancel()
		t.Fatalf("coffer server did not start: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("coffer server did not start within 20s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
		}
	})
	var err error
	if e.root, err = client.New(e.addr, client.WithToken(rootToken)); err != nil {
		t.Fatal(err)
	}
	if e.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &e.key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if _, err := e.root.RegisterCluster(ctx, client.Cluster{Name: "kind", Mode: "jwks", Issuer: testIssuer, JWKS: string(jwks)}); err != nil {
		t.Fatal(err)
	}
	doc := "statements:\n  - effect: allow\n    actions: [secret:Read]\n    resources: [\"secret/${principal.namespace}/*\"]\n"
	if _, err := e.root.PutPolicy(ctx, "pod-reads-own-namespace", client.PutPolicyRequest{Document: doc}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.root.CreateRole(ctx, client.Role{Name: "csi", Policies: []string{"pod-reads-own-namespace"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kind", Namespace: "*", ServiceAccount: "*"}}}); err != nil {
		t.Fatal(err)
	}

	dir, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.socket = filepath.Join(dir, "coffer.sock")
	ln, err := Listen(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	newClient := func(address, token string) (*client.Client, error) {
		if token != "" {
			e.mu.Lock()
			e.issued = append(e.issued, token)
			e.mu.Unlock()
		}
		return client.New(address, client.WithToken(token))
	}
	p := New(Config{Address: e.addr, AllowedAddresses: []string{"http://127.0.0.1:1"}, NewClient: newClient, Version: "1.2.3", Logger: slog.New(slog.NewTextHandler(syncWriter{e.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	gs := NewGRPCServer(p)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	conn, err := grpc.NewClient("unix:"+e.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.grpc = v1alpha1.NewCSIDriverProviderClient(conn)
	return e
}

// syncWriter is a strings.Builder written by the provider's goroutines
// and read by the test after the calls returned.
type syncWriter struct{ b *strings.Builder }

func (w syncWriter) Write(p []byte) (int, error) { return w.b.Write(p) }

// saToken mints a projected service-account token of namespace/sa for
// audience, as the kubelet does for the driver's tokenRequests.
func (e *env) saToken(namespace, sa, audience string) string {
	e.t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: e.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		e.t.Fatal(err)
	}
	now := time.Now()
	c := jwt.Claims{Issuer: testIssuer, Subject: "system:serviceaccount:" + namespace + ":" + sa, Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}
	priv := map[string]any{"kubernetes.io": map[string]any{"namespace": namespace,
		"pod":            map[string]string{"name": "web-0", "uid": "p-1"},
		"serviceaccount": map[string]string{"name": sa, "uid": "u-" + namespace}}}
	tok, err := jwt.Signed(sig).Claims(c).Claims(priv).Serialize()
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// attributes builds the attributes JSON the driver sends: the
// SecretProviderClass parameters plus the pod's fields and tokens.
func attributes(t *testing.T, params map[string]string, namespace string, tokens map[string]string) string {
	t.Helper()
	a := map[string]string{
		AttrPodName:                  "web-0",
		AttrPodNamespace:             namespace,
		AttrServiceAccount:           "web",
		"csi.storage.k8s.io/pod.uid": "p-1",
		"secretProviderClass":        "coffer-web",
	}
	for k, v := range params {
		a[k] = v
	}
	if tokens != nil {
		m := map[string]map[string]string{}
		for aud, tok := range tokens {
			m[aud] = map[string]string{"token": tok, "expirationTimestamp": time.Now().Add(10 * time.Minute).Format(time.RFC3339)}
		}
		b, _ := json.Marshal(m)
		a[AttrTokens] = string(b)
	}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (e *env) put(name string, fields map[string]string) uint32 {
	e.t.Helper()
	v, err := e.root.SecretPut(context.Background(), name, client.SecretPutRequest{Fields: fields})
	if err != nil {
		e.t.Fatal(err)
	}
	return v.Version
}

const webObjects = `
- secret: team-a/web/db
  field: password
  path: db/password
- secret: team-a/web/api
`

func (e *env) mount(namespace, objects string, tokens map[string]string, extra map[string]string) (*v1alpha1.MountResponse, error) {
	params := map[string]string{ParamRole: "csi", ParamObjects: objects}
	for k, v := range extra {
		params[k] = v
	}
	return e.grpc.Mount(context.Background(), &v1alpha1.MountRequest{
		Attributes: attributes(e.t, params, namespace, tokens),
		Secrets:    "{}",
		TargetPath: "/var/lib/kubelet/pods/p-1/volumes/kubernetes.io~csi/secrets/mount",
		Permission: "420",
	})
}

func files(resp *v1alpha1.MountResponse) map[string]string {
	m := map[string]string{}
	for _, f := range resp.GetFiles() {
		m[f.Path] = string(f.Contents)
	}
	return m
}

func versions(resp *v1alpha1.MountResponse) map[string]string {
	m := map[string]string{}
	for _, v := range resp.GetObjectVersion() {
		m[v.Id] = v.Version
	}
	return m
}

// TestMount: a pod of team-a mounts its secrets: one field as a file and a
// whole secret as a directory, with the driver's mode, and the object
// versions; a new version gives a new object version on the next Mount
// (the driver's rotation poll).
func TestMount(t *testing.T) {
	e := newEnv(t)
	e.put("team-a/web/db", map[string]string{"password": "pw-1", "user": "app"})
	e.put("team-a/web/api", map[string]string{"key": "k-1", "url": "https://api"})

	v, err := e.grpc.Version(context.Background(), &v1alpha1.VersionRequest{Version: "v1alpha1"})
	if err != nil || v.RuntimeName != "coffer" || v.RuntimeVersion != "1.2.3" {
		t.Fatalf("Version: %+v, %v", v, err)
	}

	tok := e.saToken("team-a", "web", "coffer")
	resp, err := e.mount("team-a", webObjects, map[string]string{"coffer": tok}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"db/password": "pw-1", "api/key": "k-1", "api/url": "https://api"}
	if got := files(resp); !equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	for _, f := range resp.Files {
		if f.Mode != 0o644 {
			t.Errorf("%s: mode %o, want 644 (permission \"420\")", f.Path, f.Mode)
		}
	}
	if got, want := versions(resp), map[string]string{"team-a/web/db#password": "1", "team-a/web/api": "1"}; !equal(got, want) {
		t.Fatalf("object versions %v, want %v", got, want)
	}

	// Rotation: a new version, seen on the driver's next poll.
	e.put("team-a/web/db", map[string]string{"password": "pw-2", "user": "app"})
	resp, err = e.mount("team-a", webObjects, map[string]string{"coffer": tok}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if files(resp)["db/password"] != "pw-2" || versions(resp)["team-a/web/db#password"] != "2" {
		t.Fatalf("after a new version: files %v versions %v", files(resp), versions(resp))
	}

	// The previous stage and a pinned version are their own objects.
	resp, err = e.mount("team-a", "- {secret: team-a/web/db, field: password, stage: previous, path: old}\n- {secret: team-a/web/db, field: password, version: 2, path: new}",
		map[string]string{"coffer": tok}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := files(resp), map[string]string{"old": "pw-1", "new": "pw-2"}; !equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	if got, want := versions(resp), map[string]string{"team-a/web/db#password@previous": "1", "team-a/web/db#password@v2": "2"}; !equal(got, want) {
		t.Fatalf("object versions %v, want %v", got, want)
	}
	for _, s := range []string{tok, "pw-1", "pw-2", "k-1"} {
		if strings.Contains(e.logs.String(), s) {
			t.Fatalf("the provider's log holds a token or value: %s", e.logs.String())
		}
	}
}

// TestMountOtherNamespace: a pod of team-b naming team-a's secret is
// refused by the server's policy; the Mount fails naming the secret and
// returns no file, even for the secret it may read.
func TestMountOtherNamespace(t *testing.T) {
	e := newEnv(t)
	e.put("team-a/web/db", map[string]string{"password": "pw-a"})
	e.put("team-b/web/db", map[string]string{"password": "pw-b"})
	tok := e.saToken("team-b", "web", "coffer")
	objs := "- {secret: team-b/web/db, field: password, path: mine}\n- {secret: team-a/web/db, field: password, path: theirs}"
	resp, err := e.mount("team-b", objs, map[string]string{"coffer": tok}, nil)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Mount: %v, want PermissionDenied", err)
	}
	if resp != nil && len(resp.Files) > 0 {
		t.Fatalf("a refused Mount returned files: %v", files(resp))
	}
	msg := status.Convert(err).Message()
	if !strings.Contains(msg, `"team-a/web/db"`) || strings.Contains(msg, "pw-") || strings.Contains(msg, tok) {
		t.Fatalf("error %q: want the secret's name, never a value or the token", msg)
	}
	// The pod's own secret alone mounts.
	resp, err = e.mount("team-b", "- {secret: team-b/web/db, field: password, path: mine}", map[string]string{"coffer": tok}, nil)
	if err != nil || files(resp)["mine"] != "pw-b" {
		t.Fatalf("own secret: %v, %v", files(resp), err)
	}
	// A token for another audience than the role's is refused at login.
	other := e.saToken("team-b", "web", "vault")
	_, err = e.mount("team-b", "- {secret: team-b/web/db, field: password}", map[string]string{"vault": other}, nil)
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("token for audience vault: %v, want Unauthenticated", err)
	}
}

// TestMountAudience: with several tokens the audience parameter (or
// coffer) picks one; a missing one is a clear error.
func TestMountAudience(t *testing.T) {
	e := newEnv(t)
	e.put("team-a/web/db", map[string]string{"password": "pw"})
	objs := "- {secret: team-a/web/db, field: password}"
	toks := map[string]string{"coffer": e.saToken("team-a", "web", "coffer"), "vault": e.saToken("team-b", "web", "vault")}
	if resp, err := e.mount("team-a", objs, toks, nil); err != nil || files(resp)["password"] != "pw" {
		t.Fatalf("default audience: %v %v", files(resp), err)
	}
	// audience=vault picks the vault token (team-b's): it does not log in
	// to a role that wants audience coffer.
	if _, err := e.mount("team-a", objs, toks, map[string]string{ParamAudience: "vault"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("audience vault: %v, want Unauthenticated", err)
	}
	_, err := e.mount("team-a", objs, toks, map[string]string{ParamAudience: "nope"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("missing audience: %v", err)
	}
	_, err = e.mount("team-a", objs, nil, nil)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "tokenRequests") {
		t.Fatalf("no tokens: %v", err)
	}
}

// TestMountBadInput: each malformed request is InvalidArgument (or a
// clear NotFound) with a message, never files.
func TestMountBadInput(t *testing.T) {
	e := newEnv(t)
	e.put("team-a/web/db", map[string]string{"password": "pw", "user": "app"})
	toks := map[string]string{"coffer": e.saToken("team-a", "web", "coffer")}
	many := strings.Repeat("- {secret: team-a/web/db, field: password}\n", MaxObjects+1)
	for _, c := range []struct {
		name, objects string
		extra         map[string]string
		code          codes.Code
		msg           string
	}{
		{"absolute path", "- {secret: team-a/web/db, field: password, path: /etc/passwd}", nil, codes.InvalidArgument, "absolute"},
		{"dotdot", "- {secret: team-a/web/db, field: password, path: ../../x}", nil, codes.InvalidArgument, "leaves the volume"},
		{"dotdot inside", "- {secret: team-a/web/db, field: password, path: a/../../x}", nil, codes.InvalidArgument, "leaves the volume"},
		{"driver's ..data", "- {secret: team-a/web/db, field: password, path: ..data}", nil, codes.InvalidArgument, "reserves"},
		{"unclean", "- {secret: team-a/web/db, field: password, path: a//b}", nil, codes.InvalidArgument, "not a clean path"},
		{"duplicate path", "- {secret: team-a/web/db, field: password, path: x}\n- {secret: team-a/web/db, field: user, path: x}", nil, codes.InvalidArgument, `path "x" is given by both`},
		{"file under file", "- {secret: team-a/web/db, field: password, path: x}\n- {secret: team-a/web/db, field: user, path: x/y}", nil, codes.InvalidArgument, "directory of the other"},
		{"duplicate object", "- {secret: team-a/web/db, field: password, path: x}\n- {secret: team-a/web/db, field: password, path: y}", nil, codes.InvalidArgument, "listed twice"},
		{"too many", many, nil, codes.InvalidArgument, "more than the limit"},
		{"unknown key", "- {secret: team-a/web/db, feild: password}", nil, codes.InvalidArgument, "feild"},
		{"not a list", "secret: x", nil, codes.InvalidArgument, "objects"},
		{"no objects", "", nil, codes.InvalidArgument, "objects parameter is required"},
		{"stage", "- {secret: team-a/web/db, stage: pending}", nil, codes.InvalidArgument, "want current or previous"},
		{"no role", "- {secret: team-a/web/db}", map[string]string{ParamRole: ""}, codes.InvalidArgument, "role parameter is required"},
		{"address not allowed", "- {secret: team-a/web/db}", map[string]string{ParamAddress: "http://169.254.169.254"}, codes.InvalidArgument, "is not a Coffer server this provider may call"},
		{"dotdot secret", "- {secret: team-a/../team-b/db, field: password, path: x}", nil, codes.InvalidArgument, "is not a secret name"},
		{"empty segment", "- {secret: team-a//db, field: password, path: x}", nil, codes.InvalidArgument, "is not a secret name"},
		{"missing field", "- {secret: team-a/web/db, field: pasword}", nil, codes.NotFound, `no field "pasword"`},
		{"missing secret", "- {secret: team-a/web/nope}", nil, codes.NotFound, `"team-a/web/nope"`},
	} {
		resp, err := e.mount("team-a", c.objects, toks, c.extra)
		if status.Code(err) != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v with %q", c.name, err, c.code, c.msg)
		}
		if len(resp.GetFiles()) > 0 {
			t.Errorf("%s: files returned", c.name)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("%s: a value in %v", c.name, err)
		}
	}

	// Raw requests: oversized attributes, bad permission.
	big := &v1alpha1.MountRequest{Attributes: `{"x":"` + strings.Repeat("a", MaxAttributes) + `"}`, Permission: "420"}
	if _, err := e.grpc.Mount(context.Background(), big); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized attributes: %v", err)
	}
	for _, perm := range []string{`"420"`, "-1", "512", "rw"} {
		req := &v1alpha1.MountRequest{Attributes: attributes(t, map[string]string{ParamRole: "csi", ParamObjects: "- {secret: team-a/web/db}"}, "team-a", toks), Permission: perm}
		if _, err := e.grpc.Mount(context.Background(), req); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "permission") {
			t.Errorf("permission %s: %v", perm, err)
		}
	}
	if _, err := e.grpc.Mount(context.Background(), &v1alpha1.MountRequest{Attributes: "[1]"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("attributes not an object: %v", err)
	}
	// Mode 0400 from the driver reaches the files.
	req := &v1alpha1.MountRequest{Attributes: attributes(t, map[string]string{ParamRole: "csi", ParamObjects: "- {secret: team-a/web/db}"}, "team-a", toks), Permission: "256"}
	resp, err := e.grpc.Mount(context.Background(), req)
	if err != nil || len(resp.Files) != 2 || resp.Files[0].Mode != 0o400 || resp.Files[1].Mode != 0o400 {
		t.Errorf("permission 256: %v %v", resp, err)
	}
}

// TestSocketMode: the socket is 0600, and a regular file at its path is
// not removed.
func TestSocketMode(t *testing.T) {
	e := newEnv(t)
	fi, err := os.Stat(e.socket)
	if err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v %v, want a 0600 socket", fi.Mode(), err)
	}
	f := filepath.Join(filepath.Dir(e.socket), "file")
	os.WriteFile(f, []byte("x"), 0o600)
	if _, err := Listen(f); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// TestMountAllowedAddress: a cofferAddress among the allowed ones is
// called (here nothing listens there: Unavailable, not InvalidArgument).
func TestMountAllowedAddress(t *testing.T) {
	e := newEnv(t)
	toks := map[string]string{"coffer": e.saToken("team-a", "web", "coffer")}
	_, err := e.mount("team-a", "- {secret: team-a/web/db}", toks, map[string]string{ParamAddress: "http://127.0.0.1:1"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("allowed address: %v, want Unavailable", err)
	}
}

// TestMountRevokesRoleToken: the role token a Mount logged in for is
// revoked when the Mount ends, so no usable credential outlives it.
func TestMountRevokesRoleToken(t *testing.T) {
	e := newEnv(t)
	e.put("team-a/web/db", map[string]string{"password": "pw"})
	toks := map[string]string{"coffer": e.saToken("team-a", "web", "coffer")}
	if _, err := e.mount("team-a", "- {secret: team-a/web/db, field: password}", toks, nil); err != nil {
		t.Fatal(err)
	}
	// A refused Mount revokes its token too.
	if _, err := e.mount("team-a", "- {secret: team-b/web/db, field: password}", toks, nil); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("other namespace: %v", err)
	}
	e.mu.Lock()
	issued := append([]string(nil), e.issued...)
	e.mu.Unlock()
	if len(issued) != 2 {
		t.Fatalf("%d role tokens issued, want 2", len(issued))
	}
	for i, tok := range issued {
		c, _ := client.New(e.addr, client.WithToken(tok))
		_, err := c.SecretGet(context.Background(), "team-a/web/db", client.SecretGetOptions{})
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 401 {
			t.Errorf("role token %d after its Mount: %v, want 401 (revoked)", i, err)
		}
	}
}

// TestMountLimits: a mount of more files, or more bytes, than the driver
// can take is refused whole.
func TestMountLimits(t *testing.T) {
	e := newEnv(t)
	toks := map[string]string{"coffer": e.saToken("team-a", "web", "coffer")}
	// The server keeps a secret under 256 fields: two secrets of 200.
	for _, name := range []string{"team-a/many1", "team-a/many2"} {
		many := map[string]string{}
		for i := 0; i < 200; i++ {
			many[fmt.Sprintf("f%03d", i)] = "x"
		}
		e.put(name, many)
	}
	resp, err := e.mount("team-a", "- {secret: team-a/many1}\n- {secret: team-a/many2}", toks, nil)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "more than 256 files") || len(resp.GetFiles()) > 0 {
		t.Fatalf("400 files: %v", err)
	}

	big := strings.Repeat("b", 60<<10)
	var objs strings.Builder
	n := MaxTotalBytes/len(big) + 1
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("team-a/big/%02d", i)
		e.put(name, map[string]string{"v": big})
		fmt.Fprintf(&objs, "- {secret: %s, field: v, path: b%02d}\n", name, i)
	}
	resp, err = e.mount("team-a", objs.String(), toks, nil)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "bytes") || len(resp.GetFiles()) > 0 {
		t.Fatalf("%d x 60 KiB: %v", n, err)
	}
}
