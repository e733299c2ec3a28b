package kube_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/kube"
)

// kmsProbePeriod is how long the apiserver keeps a successful KMS health
// answer (kmsPluginHealthzPositiveTTL, 20 s in k8s.io/apiserver): a failure
// the plugin reports is seen, and a recovery noticed, within it.
const kmsProbePeriod = 20 * time.Second

// healthSample is one observation of the apiserver's KMS health and the
// plugin's readiness.
type healthSample struct {
	at              time.Time
	apiUp           bool // the apiserver answered (it is restarted once)
	apiOK, pluginOK bool
	detail          string
}

// watchHealth samples /healthz/kms-providers and the plugin's /readyz every
// 200 ms until stop is closed.
func watchHealth(api *kube.APIServer, plugin *kube.Plugin, stop <-chan struct{}) func() []healthSample {
	var mu sync.Mutex
	var samples []healthSample
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			code, body, err := api.RawGet("/healthz/kms-providers")
			rz, perr := plugin.Readyz()
			s := healthSample{at: time.Now(), apiUp: err == nil, apiOK: err == nil && code == 200, pluginOK: perr == nil && rz.OK}
			if !s.apiOK || !s.pluginOK {
				s.detail = strings.TrimSpace(body) + " | plugin: " + rz.Class + " " + rz.Error
			}
			mu.Lock()
			samples = append(samples, s)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return func() []healthSample {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return samples
	}
}

// TestKMSReplicaFailover: two Coffer replicas on one etcd (under /coffer,
// beside the apiserver's /registry), each unsealed on its own, and the
// plugin given both addresses. SIGKILL the replica the plugin uses:
// Secrets stay readable and writable through the apiserver, the plugin
// moves to the other replica, and the apiserver's KMS health stays ok (or
// recovers within its probe period). A restarted apiserver, with no seed
// cached, unwraps the stored seeds through the surviving replica.
func TestKMSReplicaFailover(t *testing.T) {
	kube.RequireE2E(t)
	start := time.Now()
	ctx := context.Background()

	etcd := kube.StartEtcd(t)
	reps := kube.StartReplicas(t, etcd, 2, "/coffer")
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	key, err := reps.Client().CreateKey(cctx, client.CreateKeyRequest{Alias: "alias/k8s"})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	reps.WaitKey("alias/k8s")
	plugin := kube.StartPluginReplicas(t, reps, kube.PluginOptions{HealthInterval: time.Second})
	keyID := plugin.WaitKeyID(kube.Patience(), nil)
	if keyID != key.ID+":1" {
		t.Fatalf("plugin key_id %q, want %s:1", keyID, key.ID)
	}
	api := kube.StartAPIServer(t, etcd, kube.APIServerOptions{EncryptionConfig: kube.EncryptionConfig(plugin.Socket)})
	cs := api.Clientset()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := names("before", 3)
	for _, n := range before {
		createSecret(t, cs, n)
	}
	wantEncrypted(t, etcd, "secrets", before, keyID)
	readBack(t, cs, before, nil)
	kmsHealth(t, api, kube.Patience(), "healthy", func(c int) bool { return c == 200 })

	rz, err := plugin.Readyz()
	if err != nil || !rz.OK {
		t.Fatalf("plugin /readyz before the kill: %+v, %v", rz, err)
	}
	used := reps.Index(rz.Server)
	if used < 0 {
		t.Fatalf("plugin /readyz names server %q, not one of %v", rz.Server, reps.Addrs)
	}
	other := reps.Addrs[1-used]

	stop := make(chan struct{})
	collect := watchHealth(api, plugin, stop)
	reps.Kill(used)
	killed := time.Now()
	t.Logf("killed replica %d (%s), the one the plugin used", used, reps.Addrs[used])

	// The plugin moves to the other replica.
	var moved time.Duration
	for {
		rz, err = plugin.Readyz()
		if err == nil && rz.OK && rz.Server == other {
			moved = time.Since(killed)
			break
		}
		if time.Since(killed) > kube.Patience() {
			t.Fatalf("the plugin did not move to %s: %+v, %v", other, rz, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("plugin ready on the other replica %s after the kill", moved.Round(time.Millisecond))

	// Readable and writable through the apiserver.
	after := names("after-kill", 3)
	for _, n := range after {
		createSecret(t, cs, n)
	}
	wantEncrypted(t, etcd, "secrets", after, keyID)
	readBack(t, cs, append(before, after...), nil)

	// A restarted apiserver has no seed cached: it unwraps the stored
	// seed and wraps a new one, through the plugin and the surviving
	// replica.
	api.Restart()
	cs = api.Clientset()
	readBack(t, cs, append(before, after...), nil)
	createSecret(t, cs, "after-apiserver-restart")
	wantEncrypted(t, etcd, "secrets", []string{"after-apiserver-restart"}, keyID)
	readBack(t, cs, []string{"after-apiserver-restart"}, nil)
	kmsHealth(t, api, kube.Patience(), "healthy", func(c int) bool { return c == 200 })
	// Watch a little past one probe period after the kill.
	if d := kmsProbePeriod + 3*time.Second - time.Since(killed); d > 0 {
		time.Sleep(d)
	}
	close(stop)
	samples := collect()

	var apiFail, pluginFail, apiDown int
	var lastAPIFail time.Time
	for _, s := range samples {
		if !s.apiUp {
			apiDown++ // restarting: not a KMS health answer
		} else if !s.apiOK {
			apiFail++
			lastAPIFail = s.at
			t.Logf("kms health not ok at +%s: %s", s.at.Sub(killed).Round(time.Millisecond), s.detail)
		}
		if !s.pluginOK {
			pluginFail++
		}
	}
	t.Logf("health after the kill: %d samples over %s; apiserver kms-providers failed %d (and %d while it restarted), plugin /readyz failed %d",
		len(samples), samples[len(samples)-1].at.Sub(killed).Round(time.Second), apiFail, apiDown, pluginFail)
	if apiFail > 0 {
		if late := lastAPIFail.Sub(killed); late > kmsProbePeriod {
			t.Errorf("the apiserver's KMS health still failed %s after the kill, past its probe period of %s", late.Round(time.Millisecond), kmsProbePeriod)
		}
	}
	if pluginFail > 0 {
		t.Errorf("the plugin's /readyz failed %d times after the kill, with a replica still up", pluginFail)
	}
	t.Logf("replica failover end to end took %s", time.Since(start).Round(time.Millisecond))
}
