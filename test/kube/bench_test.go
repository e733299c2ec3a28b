package kube_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cofferkms/coffer/test/kube"
)

const (
	benchSecrets = 2000
	benchWorkers = 32
)

// createMany creates n 1 KiB Secrets in namespace with benchWorkers
// concurrent clients and returns how long it took.
func createMany(b *testing.B, cs kubernetes.Interface, namespace string, n int) time.Duration {
	b.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 1024)
	rand.Read(payload)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchWorkers)
	start := time.Now()
	for range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				_, err := cs.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s-%05d", i)},
					Data:       map[string][]byte{"data": payload},
				}, metav1.CreateOptions{})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return d
}

// listAll lists the Secrets of namespace in pages of 500 and returns how
// long it took.
func listAll(b *testing.B, cs kubernetes.Interface, namespace string, want int) time.Duration {
	b.Helper()
	start := time.Now()
	n, cont := 0, ""
	for {
		l, err := cs.CoreV1().Secrets(namespace).List(context.Background(), metav1.ListOptions{Limit: 500, Continue: cont})
		if err != nil {
			b.Fatal(err)
		}
		n += len(l.Items)
		if cont = l.Continue; cont == "" {
			break
		}
	}
	d := time.Since(start)
	if n != want {
		b.Fatalf("listed %d secrets in %s, want %d", n, namespace, want)
	}
	return d
}

// BenchmarkSecretsKMSvsIdentity creates 2,000 Secrets with the identity
// provider and 2,000 with the Coffer KMS v2 provider, then lists each set
// after an apiserver restart (watch cache off, so the list reads and
// decrypts from etcd with a cold seed cache), and reports the ratios
// Coffer/identity. Run it with
//
//	COFFER_E2E=1 go test -run '^$' -bench SecretsKMSvsIdentity -benchtime 1x ./test/kube/
func BenchmarkSecretsKMSvsIdentity(b *testing.B) {
	kube.RequireE2E(b)
	for range b.N {
		etcd := kube.StartEtcd(b)
		coffer := kube.StartCoffer(b)
		coffer.CreateKey("alias/k8s")
		plugin := kube.StartPlugin(b, coffer, kube.PluginOptions{})
		plugin.WaitKeyID(kube.Patience(), nil)
		api := kube.StartAPIServer(b, etcd, kube.APIServerOptions{EncryptionConfig: kube.IdentityConfig(plugin.Socket, "secrets")})

		// Each phase starts on a freshly restarted apiserver and warms it
		// up with 200 Secrets first, so neither pays for start-up work.
		api.Restart()
		createMany(b, api.Clientset(), "warm-identity", 200)
		idCreate := createMany(b, api.Clientset(), "bench-identity", benchSecrets)

		api.SetEncryptionConfig(kube.EncryptionConfig(plugin.Socket, "secrets"))
		api.Restart()
		createMany(b, api.Clientset(), "warm-coffer", 200)
		kmsCreate := createMany(b, api.Clientset(), "bench-coffer", benchSecrets)

		// Cold lists: a fresh apiserver without the watch cache reads from
		// etcd; the Coffer set needs the plugin to decrypt its seed first.
		api.SetExtraArgs("--watch-cache=false")
		api.Restart()
		idList := listAll(b, api.Clientset(), "bench-identity", benchSecrets)
		api.Restart()
		kmsList := listAll(b, api.Clientset(), "bench-coffer", benchSecrets)

		idRate := float64(benchSecrets) / idCreate.Seconds()
		kmsRate := float64(benchSecrets) / kmsCreate.Seconds()
		createRatio := kmsRate / idRate
		listRatio := idList.Seconds() / kmsList.Seconds() // throughput ratio
		b.Logf("create %d Secrets: identity %s (%.0f/s), coffer %s (%.0f/s); throughput ratio coffer/identity = %.2f (target >= 0.9)",
			benchSecrets, idCreate.Round(time.Millisecond), idRate, kmsCreate.Round(time.Millisecond), kmsRate, createRatio)
		b.Logf("list %d Secrets after an apiserver restart: identity %s, coffer %s; throughput ratio coffer/identity = %.2f",
			benchSecrets, idList.Round(time.Millisecond), kmsList.Round(time.Millisecond), listRatio)
		b.ReportMetric(idRate, "identity-creates/s")
		b.ReportMetric(kmsRate, "coffer-creates/s")
		b.ReportMetric(createRatio, "create-ratio")
		b.ReportMetric(float64(idList.Milliseconds()), "identity-list-ms")
		b.ReportMetric(float64(kmsList.Milliseconds()), "coffer-list-ms")
		b.ReportMetric(listRatio, "list-ratio")
	}
}
