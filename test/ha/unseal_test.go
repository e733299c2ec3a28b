package ha

import (
	"fmt"
	"sync"
	"testing"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
	"github.com/cofferkms/coffer/test/rawapi"
)

// A replica being unsealed answers a valid token "sealed" (503) until it
// can check it, then serves it: never "unauthenticated" (401), which tells
// a client its token is gone and makes it throw the token away (or counts
// against its source's failed-authentication budget). Seen in TestHAChaos:
// requests arriving while a restarted replica was unsealing got 401 for the
// root token.
func TestHAUnsealRefusesNoValidToken(t *testing.T) {
	requireE2E(t)
	proc.CofferBin(t)
	etcd := startEtcdCluster(t, 3)
	c := startCoffer(t, etcd, 2, clusterOptions{})
	var k client.Key
	c.replicas[0].api.Must(t, "POST", "/v1/keys", client.CreateKeyRequest{Description: "unseal probe"}, &k)
	r := c.replicas[1]
	var bad []string
	counts := map[string]int{}
	for round := range 3 {
		c.Kill(1)
		c.startReplica(r, false)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				api := rawapi.New(rawapi.At(r.addr), c.root)
				for {
					select {
					case <-stop:
						return
					default:
					}
					err := api.Do(t.Context(), "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")}, nil)
					mu.Lock()
					switch s := rawapi.StatusOf(err); {
					case err == nil:
						counts["ok"]++
					case s == 503:
						counts["503 "+rawapi.CodeOf(err)]++
					default:
						counts[fmt.Sprint(s, " ", rawapi.CodeOf(err))]++
						bad = append(bad, fmt.Sprintf("round %d: %v", round, err))
					}
					mu.Unlock()
				}
			}()
		}
		c.unseal(r)
		// A few more answers after the unseal returned.
		api := rawapi.New(rawapi.At(r.addr), c.root)
		for range 20 {
			api.Do(t.Context(), "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: k.ID, Plaintext: []byte("x")}, nil)
		}
		close(stop)
		wg.Wait()
	}
	t.Logf("answers while unsealing (3 rounds): %v", counts)
	if len(bad) > 0 {
		t.Fatalf("%d requests with the valid root token were refused while the replica unsealed, first: %v", len(bad), bad[0])
	}
}
