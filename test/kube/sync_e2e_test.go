package kube_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/secretsync"
	"github.com/cofferkms/coffer/test/kube"
	"github.com/cofferkms/coffer/test/proc"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRD creates the CofferSecret CRD from the shipped
// deploy/coffer-sync/crd.yaml through the apiextensions API and waits
// until it is established.
func installCRD(t testing.TB, dyn dynamic.Interface) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(kube.ModuleRoot(t), "deploy", "coffer-sync", "crd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("crd.yaml: %v", err)
	}
	ctx := context.Background()
	if _, err := dyn.Resource(crdGVR).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the CRD from crd.yaml: %v", err)
	}
	syncEventually(t, "the CRD established", func() bool {
		u, err := dyn.Resource(crdGVR).Get(ctx, "coffersecrets.cofferkms.io", metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true
			}
		}
		return false
	})
}

// applyRBAC creates the objects of the shipped deploy/coffer-sync/rbac.yaml
// (the namespace and service account may exist already).
func applyRBAC(t testing.TB, dyn dynamic.Interface) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(kube.ModuleRoot(t), "deploy", "coffer-sync", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gvrs := map[string]schema.GroupVersionResource{
		"Namespace":          {Version: "v1", Resource: "namespaces"},
		"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
		"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
		"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
		"Role":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
		"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("rbac.yaml: %v", err)
		}
		u := &unstructured.Unstructured{Object: obj}
		gvr, ok := gvrs[u.GetKind()]
		if !ok {
			t.Fatalf("rbac.yaml: unexpected kind %q", u.GetKind())
		}
		var ri dynamic.ResourceInterface = dyn.Resource(gvr)
		if u.GetNamespace() != "" {
			ri = dyn.Resource(gvr).Namespace(u.GetNamespace())
		}
		if _, err := ri.Create(context.Background(), u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("rbac.yaml: creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// userKubeconfig writes a kubeconfig that authenticates with token.
func userKubeconfig(t testing.TB, api *kube.APIServer, token string) string {
	t.Helper()
	cfg := "apiVersion: v1\nkind: Config\nclusters:\n- name: kube\n  cluster:\n    server: " + api.URL +
		"\n    insecure-skip-tls-verify: true\nusers:\n- name: sync\n  user:\n    token: " + token +
		"\ncontexts:\n- name: kube\n  context:\n    cluster: kube\n    user: sync\ncurrent-context: kube\n"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func syncEventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(kube.Patience())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// syncLog collects the controller's log for the no-value check.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// syncCluster is a cluster with the KMS plugin, the CofferSecret CRD
// installed from deploy/coffer-sync/crd.yaml, the Coffer cluster
// registration, and a role k8s-sync that any namespace's default service
// account may log in to, reading (and listing) its namespace's secrets.
type syncCluster struct {
	*kube.Cluster
	root *client.Client
	cs   *kubernetes.Clientset
	dyn  dynamic.Interface
}

func startSyncCluster(t testing.TB) *syncCluster {
	t.Helper()
	c := kube.StartCluster(t, kube.ClusterOptions{KMS: true, APIServer: kube.APIServerOptions{ExtraArgs: []string{"--external-hostname=127.0.0.1"}}})
	api, coffer := c.APIServer, c.Coffer
	ctx := context.Background()
	root := coffer.Client()
	cs := api.Clientset()
	dyn, err := dynamic.NewForConfig(api.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	installCRD(t, dyn)

	api.CreateServiceAccount(t, "coffer-system", "coffer-sync")
	if _, err := root.RegisterCluster(ctx, client.Cluster{Name: "kube", Mode: "jwks", DiscoveryURL: api.URL,
		CACert: string(api.CACertPEM()), ReviewerToken: kube.AdminToken}); err != nil {
		t.Fatalf("RegisterCluster: %v", err)
	}
	doc := "statements:\n  - effect: allow\n    actions: [secret:Read, secret:List]\n    resources: [\"secret/${principal.namespace}/*\"]\n"
	if _, err := root.PutPolicy(ctx, "ns-reads-own-secrets", client.PutPolicyRequest{Document: doc}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.CreateRole(ctx, client.Role{Name: "k8s-sync", Policies: []string{"ns-reads-own-secrets"},
		Kubernetes: []client.KubernetesTrust{{Cluster: "kube", Namespace: "*", ServiceAccount: "default", Audience: "coffer"}}}); err != nil {
		t.Fatal(err)
	}
	return &syncCluster{Cluster: c, root: root, cs: cs, dyn: dyn}
}

// TestSyncE2E runs the `coffer k8s sync` controller in process against a
// real kube-apiserver (its Secrets encrypted at rest by the Coffer KMS
// plugin) and a real Coffer server, with the CRD installed from the
// shipped YAML and service-account tokens from the real TokenRequest API:
// a CofferSecret's Secret appears and is stored under the coffer KMS v2
// provider in etcd; a new version in Coffer reaches the Secret through the
// long-poll and restarts the Deployment; a CofferSecret naming another
// namespace's secret gets Ready=False reason Forbidden and no Secret.
func TestSyncE2E(t *testing.T) {
	kube.RequireE2E(t)
	sc := startSyncCluster(t)
	c, api, coffer, root, cs, dyn := sc.Cluster, sc.Cluster.APIServer, sc.Cluster.Coffer, sc.root, sc.cs, sc.dyn
	ctx := context.Background()
	api.CreateServiceAccount(t, "team-a", "default")
	api.CreateServiceAccount(t, "team-b", "default")
	put := func(name string, fields map[string]string) {
		t.Helper()
		if _, err := root.SecretPut(ctx, name, client.SecretPutRequest{Fields: fields}); err != nil {
			t.Fatal(err)
		}
	}
	put("team-a/db", map[string]string{"password": "sync-pw-1", "user": "app"})
	put("team-b/db", map[string]string{"password": "sync-pw-b"})

	labels := map[string]string{"app": "web"}
	if _, err := cs.AppsV1().Deployments("team-a").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example.internal/web:1"}}},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	logs := &syncLog{}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- secretsync.Run(runCtx, secretsync.Config{
			Dynamic: dyn, Role: "k8s-sync",
			Coffer: &secretsync.ClientCoffer{NewClient: func(token string) (*client.Client, error) {
				return client.New(coffer.Addr, client.WithToken(token))
			}},
			LeaseNamespace: "coffer-system", LeaseName: "coffer-sync", Identity: "e2e-1",
			Resync: time.Hour, Wait: 20 * time.Second, MinRetry: 200 * time.Millisecond, MaxRetry: 2 * time.Second,
			Logger: slog.New(slog.NewTextHandler(logs, nil)),
		})
	}()
	var stopOnce sync.Once
	stopInProcess := func() {
		stopOnce.Do(func() {
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("the controller did not stop within 30s")
			}
		})
	}
	t.Cleanup(func() {
		stopInProcess()
		if t.Failed() {
			t.Logf("controller log:\n%s", logs.String())
		}
	})

	crs := dyn.Resource(secretsync.GVR)
	create := func(ns, name string, spec map[string]any) *unstructured.Unstructured {
		t.Helper()
		u, err := crs.Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cofferkms.io/v1alpha1", "kind": "CofferSecret",
			"metadata": map[string]any{"name": name}, "spec": spec,
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating CofferSecret %s/%s: %v", ns, name, err)
		}
		return u
	}
	ready := func(ns, name string) (reason, message string, version int64) {
		u, err := crs.Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		version, _, _ = unstructured.NestedInt64(u.Object, "status", "syncedVersion")
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Ready" {
				reason, _ = m["reason"].(string)
				message, _ = m["message"].(string)
			}
		}
		return reason, message, version
	}
	secret := func(ns, name string) *corev1.Secret {
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	restartedAt := func() string {
		d, err := cs.AppsV1().Deployments("team-a").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]
	}

	// The schema's defaults and validation are the shipped YAML's.
	if _, err := crs.Namespace("team-a").Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cofferkms.io/v1alpha1", "kind": "CofferSecret", "metadata": map[string]any{"name": "bad"},
		"spec": map[string]any{"secret": "team-a/db", "target": map[string]any{"deletionPolicy": "Orphan"}},
	}}, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("a CofferSecret with deletionPolicy Orphan: %v, want Invalid from the CRD schema", err)
	}
	cr := create("team-a", "db", map[string]any{"secret": "team-a/db",
		"rolloutRestart": []any{map[string]any{"kind": "Deployment", "name": "web"}}})
	if p, _, _ := unstructured.NestedString(cr.Object, "spec", "target", "deletionPolicy"); p != "Delete" {
		t.Errorf("the CRD did not default spec.target.deletionPolicy: %q", p)
	}

	syncEventually(t, "the Secret team-a/db", func() bool { return secret("team-a", "db") != nil })
	s := secret("team-a", "db")
	if string(s.Data["password"]) != "sync-pw-1" || string(s.Data["user"]) != "app" || s.Annotations["cofferkms.io/version"] != "1" {
		t.Fatalf("Secret data keys %d, version %q", len(s.Data), s.Annotations["cofferkms.io/version"])
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != cr.GetUID() {
		t.Fatalf("owner references %+v", s.OwnerReferences)
	}
	syncEventually(t, "Ready=True Synced at version 1", func() bool {
		r, _, v := ready("team-a", "db")
		return r == "Synced" && v == 1
	})
	raw := c.Etcd.Get(t, "/registry/secrets/team-a/db")
	if !bytes.HasPrefix(raw, []byte("k8s:enc:kms:v2:coffer:")) {
		t.Fatalf("the Secret is stored as %q..., want the k8s:enc:kms:v2:coffer: prefix", raw[:min(len(raw), 30)])
	}
	if bytes.Contains(raw, []byte("sync-pw-1")) {
		t.Fatal("the value is in etcd in plaintext")
	}
	if r := restartedAt(); r != "" {
		t.Fatalf("the first sync restarted the Deployment (%s)", r)
	}
	lease, err := cs.CoordinationV1().Leases("coffer-system").Get(ctx, "coffer-sync", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "e2e-1" {
		t.Fatalf("lease: %+v %v", lease, err)
	}

	// A new version: the long-poll (20 s; the resync is an hour) brings it.
	start := time.Now()
	put("team-a/db", map[string]string{"password": "sync-pw-2", "user": "app"})
	syncEventually(t, "version 2 in the Secret", func() bool {
		s := secret("team-a", "db")
		return string(s.Data["password"]) == "sync-pw-2" && s.Annotations["cofferkms.io/version"] == "2"
	})
	if d := time.Since(start); d > 2*time.Minute {
		t.Errorf("the new version took %s to reach the Secret: the long-poll should bring it within seconds", d)
	}
	syncEventually(t, "the Deployment's rollout restart", func() bool { return restartedAt() != "" })
	syncEventually(t, "syncedVersion 2", func() bool { _, _, v := ready("team-a", "db"); return v == 2 })

	// team-b may not read team-a's secrets.
	create("team-b", "steal", map[string]any{"secret": "team-a/db"})
	syncEventually(t, "Ready=False reason Forbidden", func() bool { r, _, _ := ready("team-b", "steal"); return r == "Forbidden" })
	if _, msg, _ := ready("team-b", "steal"); !strings.Contains(msg, "team-a/db") {
		t.Errorf("Forbidden message %q does not name the secret", msg)
	}
	if secret("team-b", "steal") != nil {
		t.Fatal("a Secret was written for a forbidden secret")
	}
	// Its own secret syncs.
	create("team-b", "db", map[string]any{"secret": "team-b/db", "target": map[string]any{"deletionPolicy": "Retain"}})
	syncEventually(t, "the Secret team-b/db", func() bool { s := secret("team-b", "db"); return s != nil && string(s.Data["password"]) == "sync-pw-b" })
	if refs := secret("team-b", "db").OwnerReferences; len(refs) != 0 {
		t.Fatalf("Retain: owner references %+v", refs)
	}

	evs, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		for _, v := range []string{"sync-pw-1", "sync-pw-2", "sync-pw-b"} {
			if strings.Contains(e.Message, v) {
				t.Fatalf("event %s/%s holds a value: %q", e.Namespace, e.Name, e.Message)
			}
		}
	}
	synced := false
	for _, e := range evs.Items {
		synced = synced || (e.Reason == "Synced" && e.InvolvedObject.Kind == "CofferSecret" && e.InvolvedObject.Name == "db" && e.Namespace == "team-a")
	}
	if !synced {
		t.Error("no Synced event on CofferSecret team-a/db")
	}
	stopInProcess()
	for _, v := range []string{"sync-pw-1", "sync-pw-2", "sync-pw-b", "eyJ"} {
		if strings.Contains(logs.String(), v) {
			t.Fatalf("the controller's log holds a value or a token (%q)", v)
		}
	}

	// The command: `coffer k8s sync`, as the coffer-sync service account
	// with no more rights than the shipped rbac.yaml grants, takes the lease
	// the in-process controller gave up when it stopped, and syncs a new
	// resource and a new version (Secret writes, token requests, status,
	// events, the Deployment's restart, the Lease: all under that RBAC).
	applyRBAC(t, dyn)
	saKubeconfig := userKubeconfig(t, api, api.ServiceAccountToken(t, "coffer-system", "coffer-sync", "https://kubernetes.default.svc", 3600))
	dir := t.TempDir()
	logPath := filepath.Join(dir, "sync.log")
	p, err := proc.Start("coffer k8s sync", kube.CofferBin(t), []string{"k8s", "sync", "--kubeconfig", saKubeconfig,
		"--address", coffer.Addr, "--role", "k8s-sync", "--lease-namespace", "coffer-system", "--wait", "20s"}, nil, logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(15 * time.Second)
		if t.Failed() {
			t.Logf("coffer k8s sync output:\n%s", p.Tail(6000))
		}
	})
	if _, err := p.WaitLine("coffer k8s sync: identity", kube.Patience()); err != nil {
		t.Fatal(err)
	}
	restartedV2 := restartedAt()
	create("team-a", "api", map[string]any{"secret": "team-a/db", "data": []any{map[string]any{"key": "DB_PASSWORD", "field": "password"}}})

	syncEventually(t, "the command's Secret team-a/api", func() bool {
		s := secret("team-a", "api")
		return s != nil && string(s.Data["DB_PASSWORD"]) == "sync-pw-2" && len(s.Data) == 1
	})
	put("team-a/db", map[string]string{"password": "sync-pw-3", "user": "app"})
	syncEventually(t, "version 3 through the command", func() bool {
		return string(secret("team-a", "api").Data["DB_PASSWORD"]) == "sync-pw-3" && string(secret("team-a", "db").Data["password"]) == "sync-pw-3"
	})
	// The rest of what rbac.yaml grants, each used by the command: the
	// status patch, the Deployment's restart and the events.
	syncEventually(t, "syncedVersion 3 through the command", func() bool { _, _, v := ready("team-a", "db"); return v == 3 })
	syncEventually(t, "the command's rollout restart", func() bool { r := restartedAt(); return r != "" && r != restartedV2 })
	syncEventually(t, "the command's Synced event on team-a/api", func() bool {
		evs, err := cs.CoreV1().Events("team-a").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Reason == "Synced" && e.InvolvedObject.Name == "api" {
				return true
			}
		}
		return false
	})
	lease, err = cs.CoordinationV1().Leases("coffer-system").Get(ctx, "coffer-sync", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "e2e-1" {
		t.Fatalf("lease after the hand-over: %+v %v", lease.Spec.HolderIdentity, err)
	}
	p.Stop(15 * time.Second)
	out, _ := os.ReadFile(logPath)
	for _, v := range []string{"sync-pw-2", "sync-pw-3", "eyJ"} {
		if strings.Contains(string(out), v) {
			t.Fatalf("the command's output holds a value or a token (%q)", v)
		}
	}
}

// BenchmarkSyncRotation measures on the real cluster the time from a
// rotation in Coffer (coffer secret rotate: the two-phase rotation with
// the random generator, from the call to the promoted version) to the
// updated Kubernetes Secret, for 100 CofferSecrets of one namespace (one
// role token, one long-poll): each round rotates every secret, one after
// the other, and a
// watch on the managed Secrets notes when each shows it. It reports the
// p50 and p99 over all rounds. Run with COFFER_E2E=1 and -bench
// SyncRotation -benchtime 3x.
func BenchmarkSyncRotation(b *testing.B) {
	kube.RequireE2E(b)
	sc := startSyncCluster(b)
	ctx := context.Background()
	const n = 100
	sc.APIServer.CreateServiceAccount(b, "bench", "default")
	name := func(i int) string { return fmt.Sprintf("s-%03d", i) }
	put := func(i, v int) {
		if _, err := sc.root.SecretPut(ctx, "bench/"+name(i), client.SecretPutRequest{Fields: map[string]string{"v": strconv.Itoa(v)}}); err != nil {
			b.Fatal(err)
		}
	}
	rotate := func(i, v int) {
		r, err := sc.root.SecretRotate(ctx, "bench/"+name(i))
		if err != nil {
			b.Fatal(err)
		}
		if r.CurrentVersion != uint32(v) {
			b.Fatalf("rotating %s made version %d, want %d", name(i), r.CurrentVersion, v)
		}
	}
	crs := sc.dyn.Resource(secretsync.GVR).Namespace("bench")
	for i := range n {
		put(i, 1)
		if _, err := sc.root.SecretSetRotation(ctx, "bench/"+name(i), client.SecretRotationRequest{Every: "30d", With: "random:length=32"}); err != nil {
			b.Fatal(err)
		}
		if _, err := crs.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cofferkms.io/v1alpha1", "kind": "CofferSecret",
			"metadata": map[string]any{"name": name(i)}, "spec": map[string]any{"secret": "bench/" + name(i)},
		}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- secretsync.Run(runCtx, secretsync.Config{
			Dynamic: sc.dyn, Role: "k8s-sync",
			Coffer: &secretsync.ClientCoffer{NewClient: func(token string) (*client.Client, error) {
				return client.New(sc.Coffer.Addr, client.WithToken(token))
			}},
			LeaseNamespace: "coffer-system", LeaseName: "coffer-sync", Identity: "bench-1", Workers: 4,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}()
	b.Cleanup(func() {
		stop()
		<-done
	})
	managed := metav1.ListOptions{LabelSelector: secretsync.LabelManagedBy + "=" + secretsync.ManagedBy}
	countAt := func(v int) int {
		l, err := sc.cs.CoreV1().Secrets("bench").List(ctx, managed)
		if err != nil {
			b.Fatal(err)
		}
		k := 0
		for _, s := range l.Items {
			if s.Annotations[secretsync.AnnotationVersion] == strconv.Itoa(v) {
				k++
			}
		}
		return k
	}
	syncEventually(b, "the first 100 Secrets", func() bool { return countAt(1) == n })

	var lat []time.Duration
	b.ResetTimer()
	for round := range b.N {
		v := round + 2
		l, err := sc.cs.CoreV1().Secrets("bench").List(ctx, managed)
		if err != nil {
			b.Fatal(err)
		}
		opts := managed
		opts.ResourceVersion = l.ResourceVersion
		w, err := sc.cs.CoreV1().Secrets("bench").Watch(ctx, opts)
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		sent := map[string]time.Time{}
		seen := map[string]time.Time{}
		all := make(chan struct{})
		go func() {
			for ev := range w.ResultChan() {
				s, ok := ev.Object.(*corev1.Secret)
				if !ok || s.Annotations[secretsync.AnnotationVersion] != strconv.Itoa(v) {
					continue
				}
				mu.Lock()
				if _, dup := seen[s.Name]; !dup {
					seen[s.Name] = time.Now()
				}
				full := len(seen) == n
				mu.Unlock()
				if full {
					close(all)
					return
				}
			}
		}()
		for i := range n {
			mu.Lock()
			sent[name(i)] = time.Now()
			mu.Unlock()
			rotate(i, v)
		}
		select {
		case <-all:
		case <-time.After(kube.Patience()):
			mu.Lock()
			got := len(seen)
			mu.Unlock()
			b.Fatalf("round %d: %d of %d Secrets updated", round, got, n)
		}
		w.Stop()
		mu.Lock()
		for s, t := range seen {
			lat = append(lat, t.Sub(sent[s]))
		}
		mu.Unlock()
	}
	b.StopTimer()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
}

// BenchmarkSyncMemory measures the resident memory of the `coffer k8s
// sync` process holding syncMemoryN CofferSecrets (and as many Secrets)
// of one namespace on the real cluster, once all are synced: its current
// and peak RSS. Run with COFFER_E2E=1 and -bench SyncMemory -benchtime 1x
// (setting up 10,000 resources takes minutes).
func BenchmarkSyncMemory(b *testing.B) {
	kube.RequireE2E(b)
	sc := startSyncCluster(b)
	ctx := context.Background()
	sc.APIServer.CreateServiceAccount(b, "mem", "default")
	name := func(i int) string { return fmt.Sprintf("s-%05d", i) }
	crs := sc.dyn.Resource(secretsync.GVR).Namespace("mem")
	parallel(b, syncMemoryN, func(i int) error {
		if _, err := sc.root.SecretPut(ctx, "mem/"+name(i), client.SecretPutRequest{Fields: map[string]string{"user": "app", "password": strings.Repeat("x", 32)}}); err != nil {
			return err
		}
		_, err := crs.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cofferkms.io/v1alpha1", "kind": "CofferSecret",
			"metadata": map[string]any{"name": name(i)}, "spec": map[string]any{"secret": "mem/" + name(i)},
		}}, metav1.CreateOptions{})
		return err
	})
	dir := b.TempDir()
	p, err := proc.Start("coffer k8s sync", kube.CofferBin(b), []string{"k8s", "sync", "--kubeconfig", sc.APIServer.Kubeconfig(),
		"--address", sc.Coffer.Addr, "--role", "k8s-sync", "--lease-namespace", "coffer-system", "--workers", "4"}, nil, filepath.Join(dir, "sync.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Stop(15 * time.Second) })
	managed := metav1.ListOptions{LabelSelector: secretsync.LabelManagedBy + "=" + secretsync.ManagedBy, ResourceVersion: "0"}
	start := time.Now()
	syncEventually(b, "every Secret", func() bool {
		l, err := sc.cs.CoreV1().Secrets("mem").List(ctx, managed)
		if err != nil {
			b.Fatal(err)
		}
		if len(l.Items) < syncMemoryN {
			time.Sleep(time.Second)
			return false
		}
		return true
	})
	b.ReportMetric(time.Since(start).Seconds(), "s-to-sync-all")
	time.Sleep(5 * time.Second) // the status writes' echoes
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		b.Fatal(err)
	}
	kib := func(field string) float64 {
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				return n
			}
		}
		b.Fatalf("no %s in /proc/PID/status", field)
		return 0
	}
	b.ReportMetric(kib("VmRSS")/1024, "rss-MiB")
	b.ReportMetric(kib("VmHWM")/1024, "peak-rss-MiB")
}

// syncMemoryN is the number of CofferSecrets of BenchmarkSyncMemory.
const syncMemoryN = 10000

// parallel runs f(0..n-1) on 8 goroutines and fails b on the first error.
func parallel(b *testing.B, n int, f func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}
