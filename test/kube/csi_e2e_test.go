package kube_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/kube"
	"github.com/cofferkms/coffer/test/proc"
)

// TestCSIProviderE2E drives the real `coffer csi-provider` binary through
// the Secrets Store CSI Driver's gRPC API on a unix socket, as the driver
// does, with pod service-account tokens minted by a real kube-apiserver's
// TokenRequest API and a Coffer cluster registered through OIDC discovery:
// team-a's pod gets its secrets as files with the driver's mode and the
// Coffer versions; a new version shows on the next Mount (the rotation
// poll); team-b's pod naming team-a's secret gets PermissionDenied and no
// file.
func TestCSIProviderE2E(t *testing.T) {
	kube.RequireE2E(t)
	etcd := kube.StartEtcd(t)
	api := kube.StartAPIServer(t, etcd, kube.APIServerOptions{ExtraArgs: []string{"--external-hostname=127.0.0.1"}})
	coffer := kube.StartCoffer(t)
	ctx := context.Background()
	root := coffer.Client()

	api.CreateServiceAccount(t, "team-a", "web")
	api.CreateServiceAccount(t, "team-b", "web")
	if _, err := root.RegisterCluster(ctx, client.Cluster{Name: "kube", Mode: "jwks", DiscoveryURL: api.URL,
		CACert: string(api.CACertPEM()), ReviewerToken: kube.AdminToken}); err != nil {
		t.Fatalf("RegisterCluster: %v", err)
	}
	doc := "statements:\n  - effect: allow\n    actions: [secret:Read]\n    resources: [\"secret/${principal.namespace}/*\"]\n"
	if _, err := root.PutPolicy(ctx, "pod-reads-own-namespace", client.PutPolicyRequest{Document: doc}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.CreateRole(ctx, client.Role{Name: "csi", Policies: []string{"pod-reads-own-namespace"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kube", Namespace: "*", ServiceAccount: "web", Audience: "coffer"}}}); err != nil {
		t.Fatal(err)
	}
	put := func(name string, fields map[string]string) {
		t.Helper()
		if _, err := root.SecretPut(ctx, name, client.SecretPutRequest{Fields: fields}); err != nil {
			t.Fatal(err)
		}
	}
	put("team-a/web/db", map[string]string{"password": "pw-1", "user": "app"})
	put("team-b/web/db", map[string]string{"password": "pw-b"})

	dir, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "coffer.sock")
	args := []string{"csi-provider", "--socket", sock, "--address", coffer.Addr}
	p, err := proc.Start("csi-provider", kube.CofferBin(t), args, nil, filepath.Join(dir, "provider.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(15 * time.Second) })
	if _, err := p.WaitLine("Listening:", kube.Patience()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v, want mode 0600", fi, err)
	}
	conn, err := grpc.NewClient("unix:"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	csi := v1alpha1.NewCSIDriverProviderClient(conn)
	if v, err := csi.Version(ctx, &v1alpha1.VersionRequest{Version: "v1alpha1"}); err != nil || v.RuntimeName != "coffer" {
		t.Fatalf("Version: %v %v", v, err)
	}

	mount := func(ns, objects string) (*v1alpha1.MountResponse, string, error) {
		t.Helper()
		tok := api.ServiceAccountToken(t, ns, "web", "coffer", 600)
		toks, _ := json.Marshal(map[string]map[string]string{"coffer": {"token": tok, "expirationTimestamp": time.Now().Add(10 * time.Minute).Format(time.RFC3339)}})
		attrs, _ := json.Marshal(map[string]string{
			"role": "csi", "objects": objects,
			"csi.storage.k8s.io/pod.name": "web-0", "csi.storage.k8s.io/pod.namespace": ns,
			"csi.storage.k8s.io/pod.uid": "uid-1", "csi.storage.k8s.io/serviceAccount.name": "web",
			"csi.storage.k8s.io/serviceAccount.tokens": string(toks),
		})
		resp, err := csi.Mount(ctx, &v1alpha1.MountRequest{Attributes: string(attrs), Secrets: "{}", Permission: "420",
			TargetPath: filepath.Join(dir, "target")})
		return resp, tok, err
	}
	const objects = "- {secret: team-a/web/db, field: password, path: db-password}\n- {secret: team-a/web/db, path: all}\n"
	resp, _, err := mount("team-a", objects)
	if err != nil {
		t.Fatalf("Mount as team-a: %v", err)
	}
	got := map[string]string{}
	for _, f := range resp.Files {
		got[f.Path] = string(f.Contents)
		if f.Mode != 0o644 {
			t.Errorf("%s: mode %o, want 644", f.Path, f.Mode)
		}
	}
	if len(got) != 3 || got["db-password"] != "pw-1" || got["all/password"] != "pw-1" || got["all/user"] != "app" {
		t.Fatalf("files %v", got)
	}
	for _, ov := range resp.ObjectVersion {
		if ov.Version != "1" {
			t.Errorf("object %s version %s, want 1", ov.Id, ov.Version)
		}
	}
	// The target path is the driver's to write: the provider wrote nothing.
	if _, err := os.Stat(filepath.Join(dir, "target")); !os.IsNotExist(err) {
		t.Errorf("the provider wrote the target path: %v", err)
	}

	put("team-a/web/db", map[string]string{"password": "pw-2", "user": "app"})
	resp, _, err = mount("team-a", objects)
	if err != nil {
		t.Fatalf("Mount after a new version: %v", err)
	}
	for _, f := range resp.Files {
		if f.Path == "db-password" && string(f.Contents) != "pw-2" {
			t.Errorf("db-password after a new version: %q", f.Contents)
		}
	}
	for _, ov := range resp.ObjectVersion {
		if ov.Version != "2" {
			t.Errorf("object %s version %s after a new version, want 2", ov.Id, ov.Version)
		}
	}

	resp, tokB, err := mount("team-b", "- {secret: team-b/web/db, field: password}\n- {secret: team-a/web/db, field: password, path: theirs}\n")
	if grpcstatus.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"team-a/web/db"`) {
		t.Fatalf("team-b naming team-a's secret: %v, want PermissionDenied naming it", err)
	}
	if len(resp.GetFiles()) != 0 {
		t.Fatalf("a refused Mount returned %d files", len(resp.GetFiles()))
	}
	p.Stop(15 * time.Second)
	log, _ := os.ReadFile(filepath.Join(dir, "provider.log"))
	for _, s := range []string{tokB, "pw-1", "pw-2", "pw-b"} {
		if strings.Contains(string(log), s) {
			t.Fatalf("the provider's log holds a token or a value:\n%s", log)
		}
	}
}
