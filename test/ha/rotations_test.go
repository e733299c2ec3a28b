package ha

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
	"github.com/cofferkms/coffer/test/rawapi"
)

// haReplicas is how many coffer replicas the HA tests run.
const haReplicas = 3

// 50 concurrent rotations of one key, spread over the replicas, produce
// exactly 50 new versions: no gaps, no duplicates, every replica agrees.
func TestHAConcurrentRotations(t *testing.T) {
	requireE2E(t)
	proc.CofferBin(t) // fail before starting etcd if it does not build
	etcd := startEtcdCluster(t, 3)
	c := startCoffer(t, etcd, haReplicas, clusterOptions{})

	var key client.Key
	c.replicas[0].api.Must(t, "POST", "/v1/keys", client.CreateKeyRequest{Description: "concurrent rotations"}, &key)
	// Every replica knows the key before the race starts.
	for _, r := range c.replicas {
		var k client.Key
		r.api.Eventually(t, patience(), "GET", keyPath(key.ID), nil, &k)
	}

	const n = 50
	h := newHistory(0)
	h.add(0, linInput{Obj: "key:" + key.ID, Kind: opCreateKey}, 0, linOutput{N: 1}, h.now())
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		got      []int
		conflict int
		failures []string
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := c.replicas[i%len(c.replicas)]
			<-start
			for {
				var k client.Key
				call := h.now()
				err := r.api.Do(t.Context(), "POST", keyPath(key.ID)+"/rotate", nil, &k)
				ret := h.now()
				mu.Lock()
				switch classify(err) {
				case outOK:
					got = append(got, int(k.PrimaryVersion))
					h.add(i, linInput{Obj: "key:" + key.ID, Kind: opRotate, Replica: r.idx}, call, linOutput{N: int(k.PrimaryVersion)}, ret)
				case outRefused:
					// A definite refusal applied nothing: a conflict
					// under contention is retried, anything else fails.
					if rawapi.StatusOf(err) == 409 {
						conflict++
						mu.Unlock()
						continue
					}
					failures = append(failures, fmt.Sprintf("%s: %v", r.id, err))
				default:
					failures = append(failures, fmt.Sprintf("%s: outcome unknown: %v", r.id, err))
				}
				mu.Unlock()
				return
			}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	if len(failures) > 0 {
		t.Fatalf("%d rotations failed: %v", len(failures), failures)
	}
	sort.Ints(got)
	if len(got) != n {
		t.Fatalf("%d rotations acknowledged, want %d", len(got), n)
	}
	for i, v := range got {
		if v != i+2 {
			// Each rotation must answer the version it made.
			t.Errorf("rotations answered versions %v; want 2..%d each once", got, n+1)
			break
		}
	}
	// Every replica converges on 51 versions, 1..51 in order.
	for _, r := range c.replicas {
		var k client.Key
		err := proc.WaitFor(patience(), 50*time.Millisecond, func() error {
			if err := r.api.Do(t.Context(), "GET", keyPath(key.ID), nil, &k); err != nil {
				return err
			}
			if k.PrimaryVersion != n+1 {
				return fmt.Errorf("%s: primary version %d, want %d", r.id, k.PrimaryVersion, n+1)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v (versions %+v)", err, k.Versions)
		}
		if len(k.Versions) != n+1 {
			t.Fatalf("%s lists %d versions, want %d: %+v", r.id, len(k.Versions), n+1, k.Versions)
		}
		seen := map[uint32]bool{}
		for _, v := range k.Versions {
			if v.Version < 1 || v.Version > n+1 || seen[v.Version] {
				t.Fatalf("%s: version %d is out of range or listed twice: %+v", r.id, v.Version, k.Versions)
			}
			seen[v.Version] = true
		}
	}
	h.check(t, time.Minute)
	t.Logf("%d rotations over %d replicas in %s: versions 2..%d each once (%d conflicts retried)",
		n, len(c.replicas), elapsed.Round(time.Millisecond), n+1, conflict)
}
