package kube_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cofferkms/coffer/internal/k8senc"
	"github.com/cofferkms/coffer/test/kube"
)

func TestMain(m *testing.M) { kube.Main(m) }

const ns = "e2e"

// runCoffer runs the coffer binary and returns its stdout; it fails t on a
// non-zero exit.
func runCoffer(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(kube.CofferBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("coffer %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func status(t *testing.T, etcd *kube.Etcd, extra ...string) k8senc.Report {
	t.Helper()
	out := runCoffer(t, append([]string{"k8s", "encryption-status", "--etcd-endpoints", etcd.URL, "--resources", "secrets,configmaps", "-o", "json"}, extra...)...)
	var rep k8senc.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("encryption-status -o json: %v\n%s", err, out)
	}
	return rep
}

func marker(name string) string { return "coffer-e2e-marker-" + name }

func createSecret(t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	_, err := cs.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		StringData: map[string]string{"password": marker(name)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating secret %s: %v", name, err)
	}
}

func createConfigMap(t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	_, err := cs.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Data:       map[string]string{"setting": marker(name)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating configmap %s: %v", name, err)
	}
}

// readBack checks the objects read through the API hold their markers.
func readBack(t *testing.T, cs kubernetes.Interface, secrets, configMaps []string) {
	t.Helper()
	ctx := context.Background()
	for _, n := range secrets {
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("reading secret %s: %v", n, err)
		}
		if got := string(s.Data["password"]); got != marker(n) {
			t.Errorf("secret %s: password %q, want %q", n, got, marker(n))
		}
	}
	for _, n := range configMaps {
		c, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("reading configmap %s: %v", n, err)
		}
		if got := c.Data["setting"]; got != marker(n) {
			t.Errorf("configmap %s: setting %q, want %q", n, got, marker(n))
		}
	}
}

func etcdKey(resource, name string) string { return "/registry/" + resource + "/" + ns + "/" + name }

// stored classifies the raw etcd value of an object and checks that an
// encrypted one does not contain its plaintext marker.
func stored(t *testing.T, etcd *kube.Etcd, resource, name string) k8senc.Value {
	t.Helper()
	raw := etcd.Get(t, etcdKey(resource, name))
	if raw == nil {
		t.Fatalf("%s/%s: not in etcd", resource, name)
	}
	v := k8senc.Classify(raw)
	if !v.Plaintext() && bytes.Contains(raw, []byte(marker(name))) {
		t.Errorf("%s/%s: stored as %s but the plaintext is in etcd", resource, name, v.Provider())
	}
	return v
}

// wantEncrypted checks the objects are stored with the coffer kms v2
// prefix and keyID.
func wantEncrypted(t *testing.T, etcd *kube.Etcd, resource string, names []string, keyID string) {
	t.Helper()
	for _, n := range names {
		raw := etcd.Get(t, etcdKey(resource, n))
		if !bytes.HasPrefix(raw, []byte("k8s:enc:kms:v2:coffer:")) {
			t.Errorf("%s/%s: stored value starts %q, want the k8s:enc:kms:v2:coffer: prefix", resource, n, raw[:min(len(raw), 30)])
			continue
		}
		if v := stored(t, etcd, resource, n); v.KeyID != keyID || v.Invalid != "" {
			t.Errorf("%s/%s: key_id %q (%s), want %q", resource, n, v.KeyID, v.Invalid, keyID)
		}
	}
}

func names(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

func modRevision(t *testing.T, etcd *kube.Etcd, key string) int64 {
	t.Helper()
	r, err := etcd.Client().Get(context.Background(), key)
	if err != nil || len(r.Kvs) == 0 {
		t.Fatalf("etcd get %s: %v", key, err)
	}
	return r.Kvs[0].ModRevision
}

// kmsHealth polls /healthz/kms-providers until want(code) holds.
func kmsHealth(t *testing.T, a *kube.APIServer, timeout time.Duration, what string, want func(int) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var code int
	var body string
	var err error
	for time.Now().Before(deadline) {
		code, body, err = a.RawGet("/healthz/kms-providers")
		if err == nil && want(code) {
			return body
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("/healthz/kms-providers did not become %s within %s: %d %q %v", what, timeout, code, body, err)
	return ""
}

func TestKMSEndToEnd(t *testing.T) {
	kube.RequireE2E(t)
	start := time.Now()
	ctx := context.Background()

	// Plaintext first: the apiserver writes with identity (and could read
	// kms), so there is something to migrate later.
	etcd := kube.StartEtcd(t)
	coffer := kube.StartCoffer(t)
	keyUUID := coffer.CreateKey("alias/k8s")
	plugin := kube.StartPlugin(t, coffer, kube.PluginOptions{})
	key1 := plugin.WaitKeyID(kube.Patience(), nil)
	if key1 != keyUUID+":1" {
		t.Fatalf("plugin key_id %q, want %s:1", key1, keyUUID)
	}
	api := kube.StartAPIServer(t, etcd, kube.APIServerOptions{EncryptionConfig: kube.IdentityConfig(plugin.Socket)})
	cs := api.Clientset()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	plainSecrets, plainCMs := names("plain", 3), names("plain-cm", 2)
	for _, n := range plainSecrets {
		createSecret(t, cs, n)
	}
	for _, n := range plainCMs {
		createConfigMap(t, cs, n)
	}
	for _, n := range plainSecrets {
		if v := stored(t, etcd, "secrets", n); !v.Plaintext() {
			t.Fatalf("secret %s stored as %s under the identity config", n, v.Provider())
		}
	}

	// Switch to the Coffer provider.
	api.SetEncryptionConfig(kube.EncryptionConfig(plugin.Socket))
	api.Restart()
	cs = api.Clientset()
	encSecrets, encCMs := names("enc", 5), names("enc-cm", 3)
	for _, n := range encSecrets {
		createSecret(t, cs, n)
	}
	for _, n := range encCMs {
		createConfigMap(t, cs, n)
	}
	wantEncrypted(t, etcd, "secrets", encSecrets, key1)
	wantEncrypted(t, etcd, "configmaps", encCMs, key1)
	readBack(t, cs, append(plainSecrets, encSecrets...), append(plainCMs, encCMs...))

	rep := status(t, etcd, "--current-key-id", key1)
	if rep.Plaintext < len(plainSecrets)+len(plainCMs) || rep.Stale != rep.Plaintext {
		t.Errorf("status before rotation: plaintext %d, stale %d; want >= %d plaintext, all of them stale: %+v",
			rep.Plaintext, rep.Stale, len(plainSecrets)+len(plainCMs), rep.Rows)
	}
	t.Logf("status before rotation: %+v", rep.Rows)

	// Rotate the Coffer key. The plugin's health check sees the new
	// version within its interval; the apiserver picks it up from the
	// plugin's Status when its kms health check runs again (at most every
	// 20 s while healthy), then new writes carry the new key_id.
	coffer.RotateKey("alias/k8s")
	key2 := plugin.WaitKeyID(kube.Patience(), func(k string) bool { return k != key1 })
	if key2 != keyUUID+":2" {
		t.Fatalf("after rotation the plugin reports %q, want %s:2", key2, keyUUID)
	}
	rotated := time.Now()
	for i := 0; ; i++ {
		api.RawGet("/healthz/kms-providers") // runs the status check once its cache expired
		probe := fmt.Sprintf("probe-%d", i)
		createSecret(t, cs, probe)
		if stored(t, etcd, "secrets", probe).KeyID == key2 {
			break
		}
		if d := time.Since(rotated); d > kube.Patience() {
			t.Fatalf("new secrets still carry %s %s after the rotation", key1, d.Round(time.Second))
		}
		time.Sleep(time.Second)
	}
	t.Logf("apiserver wrote with the new key_id %s after %s", key2, time.Since(rotated).Round(time.Millisecond))
	newSecrets := names("new", 3)
	for _, n := range newSecrets {
		createSecret(t, cs, n)
	}
	createConfigMap(t, cs, "new-cm")
	wantEncrypted(t, etcd, "secrets", newSecrets, key2)
	wantEncrypted(t, etcd, "configmaps", []string{"new-cm"}, key2)
	wantEncrypted(t, etcd, "secrets", encSecrets, key1) // untouched
	readBack(t, cs, append(append(plainSecrets, encSecrets...), newSecrets...), append(plainCMs, encCMs...))

	rep = status(t, etcd, "--plugin-health", plugin.HealthURL)
	if rep.CurrentKeyID != key2 || rep.CurrentKeyIDSource != "plugin" {
		t.Errorf("status: current key_id %q from %q, want %q from the plugin", rep.CurrentKeyID, rep.CurrentKeyIDSource, key2)
	}
	if want := rep.Plaintext + len(encSecrets) + len(encCMs); rep.Stale < want {
		t.Errorf("status after rotation: %d stale, want >= %d: %+v", rep.Stale, want, rep.Rows)
	}
	staleBefore := rep.Stale

	// Migrate: only stale objects are sent (etcd tells which), with a
	// checkpoint.
	kubeconfig := api.Kubeconfig()
	ckpt := filepath.Join(t.TempDir(), "migrate.ckpt")
	freshRev := modRevision(t, etcd, etcdKey("secrets", "new-0"))
	out := runCoffer(t, "k8s", "migrate", "--kubeconfig", kubeconfig, "--resources", "secrets,configmaps",
		"--etcd-endpoints", etcd.URL, "--plugin-health", plugin.HealthURL, "--checkpoint", ckpt, "--rate", "200", "-o", "json")
	var sum k8senc.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("migrate -o json: %v\n%s", err, out)
	}
	t.Logf("migrate: listed %d rewritten %d current %d failed %d in %s", sum.Listed, sum.Rewritten, sum.Current, sum.Failed, sum.Duration)
	if sum.Failed != 0 || sum.Rewritten != staleBefore || sum.Current == 0 {
		t.Errorf("migrate summary %+v; want %d rewritten (the stale count), some current, none failed", sum, staleBefore)
	}
	rep = status(t, etcd, "--plugin-health", plugin.HealthURL)
	if rep.Stale != 0 || rep.Plaintext != 0 {
		t.Errorf("after migrate: %d stale, %d plaintext, want 0: %+v", rep.Stale, rep.Plaintext, rep.Rows)
	}
	for _, r := range rep.Rows {
		if r.Provider != "kms:v2:coffer" || r.KeyID != key2 {
			t.Errorf("after migrate: row %+v, want everything under kms:v2:coffer with %s", r, key2)
		}
	}
	runCoffer(t, "k8s", "encryption-status", "--etcd-endpoints", etcd.URL, "--resources", "secrets,configmaps",
		"--current-key-id", key2, "--exit-code") // exit 0: nothing stale
	wantEncrypted(t, etcd, "secrets", append(plainSecrets, encSecrets...), key2)
	wantEncrypted(t, etcd, "configmaps", append(plainCMs, encCMs...), key2)
	readBack(t, cs, append(append(plainSecrets, encSecrets...), newSecrets...), append(plainCMs, encCMs...))
	if rev := modRevision(t, etcd, etcdKey("secrets", "new-0")); rev != freshRev {
		t.Errorf("a current secret was rewritten (mod revision %d -> %d)", freshRev, rev)
	}

	// Resume: everything is in the checkpoint, nothing is sent.
	out = runCoffer(t, "k8s", "migrate", "--kubeconfig", kubeconfig, "--resources", "secrets,configmaps",
		"--checkpoint", ckpt, "--resume", "-o", "json")
	sum = k8senc.Summary{}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Resumed != sum.Listed || sum.Rewritten != 0 {
		t.Errorf("resumed migrate: %+v; want everything skipped from the checkpoint", sum)
	}
	// Without etcd, every object gets a no-op update, and the apiserver
	// skips the write of current ones.
	out = runCoffer(t, "k8s", "migrate", "--kubeconfig", kubeconfig, "--resources", "secrets", "--namespace", ns, "-o", "json")
	sum = k8senc.Summary{}
	json.Unmarshal([]byte(out), &sum)
	if sum.Failed != 0 || sum.Rewritten != sum.Listed || sum.Listed == 0 {
		t.Errorf("blind migrate of %s: %+v", ns, sum)
	}
	if rev := modRevision(t, etcd, etcdKey("secrets", "new-0")); rev != freshRev {
		t.Errorf("the apiserver rewrote a current secret on a no-op update (mod revision %d -> %d)", freshRev, rev)
	}

	// Restart the plugin, then the apiserver: its seed cache is cold, so
	// reading everything back decrypts through the restarted plugin.
	plugin.Restart()
	if k := plugin.WaitKeyID(kube.Patience(), nil); k != key2 {
		t.Errorf("restarted plugin reports %q, want %q", k, key2)
	}
	kmsHealth(t, api, kube.Patience(), "healthy", func(c int) bool { return c == 200 })
	createSecret(t, cs, "after-plugin-restart")
	api.Restart()
	cs = api.Clientset()
	readBack(t, cs, append(append(plainSecrets, encSecrets...), append(newSecrets, "after-plugin-restart")...), append(plainCMs, encCMs...))

	// Stop Coffer: the plugin's health check fails, and the apiserver's
	// kms health check reports it. Reads keep working from the apiserver's
	// seed cache.
	coffer.Stop()
	down := time.Now()
	body := kmsHealth(t, api, kube.Patience(), "failing", func(c int) bool { return c != 200 })
	t.Logf("/healthz/kms-providers failed %s after Coffer stopped: %q", time.Since(down).Round(time.Millisecond), body)
	if ok, _, _ := plugin.Ready(); ok {
		t.Error("plugin /readyz is ok while Coffer is down")
	}
	readBack(t, cs, encSecrets, nil)
	coffer.Restart()
	up := time.Now()
	kmsHealth(t, api, kube.Patience(), "healthy again", func(c int) bool { return c == 200 })
	t.Logf("/healthz/kms-providers recovered %s after Coffer restarted", time.Since(up).Round(time.Millisecond))
	createSecret(t, cs, "after-recovery")
	wantEncrypted(t, etcd, "secrets", []string{"after-recovery"}, key2)
	readBack(t, cs, []string{"after-recovery"}, nil)
	t.Logf("end to end took %s", time.Since(start).Round(time.Millisecond))
}
