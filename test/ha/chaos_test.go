package ha

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/test/proc"
	"github.com/cofferkms/coffer/test/rawapi"
)

var chaosDuration = flag.Duration("ha.chaos", 60*time.Second, "how long TestHAChaos loads the replicas while it injects faults")

// The chaos test's settings. The freshness bound is also the window the
// linearizability check gives to reads served from caches.
const (
	chaosFreshness = 2 * time.Second
	chaosLeaseTTL  = 5 * time.Second
)

// sealed is a ciphertext some replica returned, with what must come out.
type sealed struct {
	ct, pt []byte
	ctx    map[string]string
}

// issuedToken is a token made during the run.
type issuedToken struct {
	token, accessor string
	revoked         bool // the revocation was acknowledged
}

// chaosState is what the workers acknowledged, for the final checks.
type chaosState struct {
	mu         sync.Mutex
	sealed     []sealed
	keys       []string // keys whose creation was acknowledged
	keysLost   int      // creations with an unknown outcome
	rotAcked   map[string]int
	rotUnknown map[string]int
	tokens     []issuedToken
	ops        map[string]*[4]int // per operation: ok, refused, unknown, unreached
}

func (s *chaosState) count(op string, o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.ops[op]
	if c == nil {
		c = new([4]int)
		s.ops[op] = c
	}
	c[o]++
}

func (s *chaosState) opsSummary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(s.ops)) {
		c := s.ops[k]
		fmt.Fprintf(&b, "\n  %-14s ok %6d  refused %5d  unknown %5d  unreached %5d", k, c[0], c[1], c[2], c[3])
	}
	return b.String()
}

func policyDoc(effect, keyID string) string {
	return fmt.Sprintf("version: 1\nstatements:\n  - effect: %s\n    actions: [kms:Encrypt]\n    resources: [%q]\n", effect, keyID)
}

// TestHAChaos loads three replicas on a three-member etcd cluster from
// several clients while it kills the job leader, pauses a replica past its
// lease, stops an etcd member and finally restarts everything. Then nothing
// acknowledged may be missing, every ciphertext must decrypt on every
// replica, rotations must be exactly-once, revocations must hold everywhere,
// and the recorded history must be linearizable (reads within the
// freshness bound).
func TestHAChaos(t *testing.T) {
	requireE2E(t)
	proc.CofferBin(t) // fail before starting etcd if it does not build
	D := *chaosDuration
	etcd := startEtcdCluster(t, 3)
	c := startCoffer(t, etcd, haReplicas, clusterOptions{
		FreshnessBound:        chaosFreshness.String(),
		LeaseTTL:              chaosLeaseTTL.String(),
		RotationCheckInterval: "1s",
	})
	root := c.replicas[0].api
	h := newHistory(chaosFreshness)

	// Objects the workers share.
	newKey := func(req client.CreateKeyRequest) string {
		var k client.Key
		root.Eventually(t, patience(), "POST", "/v1/keys", req, &k)
		return k.ID
	}
	var cryptoKeys, rotKeys, autoKeys []string
	for range 3 {
		cryptoKeys = append(cryptoKeys, newKey(client.CreateKeyRequest{Description: "chaos crypto"}))
	}
	for range 2 {
		id := newKey(client.CreateKeyRequest{Description: "chaos rotate"})
		rotKeys = append(rotKeys, id)
		h.add(0, linInput{Obj: "key:" + id, Kind: opCreateKey}, 0, linOutput{N: 1}, h.now())
	}
	autoCreated := time.Now()
	for range 3 {
		autoKeys = append(autoKeys, newKey(client.CreateKeyRequest{Description: "chaos auto", RotationPeriod: "1m"}))
	}
	aliasA := newKey(client.CreateKeyRequest{Description: "chaos alias a"})
	aliasB := newKey(client.CreateKeyRequest{Description: "chaos alias b"})
	// The alias and the policy under test change name every epoch: each
	// name is an object of its own, so that the checker's search (which
	// grows with the operations in flight and the pending ones) stays small.
	const epoch = 5 * time.Second
	var aliasName atomic.Pointer[string]
	first := "alias/chaos-lin-0"
	aliasName.Store(&first)
	call := h.now()
	root.Eventually(t, patience(), "POST", "/v1/aliases", client.Alias{Name: first, KeyID: aliasA}, nil)
	h.add(0, linInput{Obj: first, Kind: opAliasCreate, Arg: aliasA}, call, linOutput{OK: true}, h.now())
	polKey := newKey(client.CreateKeyRequest{Description: "chaos policy"})
	type policyUnderTest struct{ name, token string }
	var pol atomic.Pointer[policyUnderTest]
	call = h.now()
	root.Eventually(t, patience(), "PUT", "/v1/policies/chaos-lin-0", client.PutPolicyRequest{Document: policyDoc("allow", polKey)}, nil)
	h.add(0, linInput{Obj: "policy/chaos-lin-0", Kind: opPolicyPut, Arg: "allow"}, call, linOutput{OK: true}, h.now())
	root.Eventually(t, patience(), "PUT", "/v1/policies/chaos-use", client.PutPolicyRequest{Document: policyDoc("allow", cryptoKeys[0])}, nil)
	var polTok client.CreateTokenResponse
	root.Eventually(t, patience(), "POST", "/v1/auth/token/create", client.CreateTokenRequest{TTL: "2h", DisplayName: "chaos-policy", Policies: []string{"chaos-lin-0"}}, &polTok)
	pol.Store(&policyUnderTest{name: "chaos-lin-0", token: polTok.Token})
	// Every replica sees the setup before the load starts.
	for _, r := range c.replicas {
		for _, id := range append(append(append([]string{aliasA, aliasB, polKey}, cryptoKeys...), rotKeys...), autoKeys...) {
			r.api.Eventually(t, patience(), "GET", keyPath(id), nil, nil)
		}
		r.api.WithToken(polTok.Token).Eventually(t, patience(), "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: polKey, Plaintext: []byte("x")}, nil)
	}

	st := &chaosState{rotAcked: map[string]int{}, rotUnknown: map[string]int{}, ops: map[string]*[4]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var clientID atomic.Int32
	worker := func(name string, body func(l *loadClient, id int)) {
		id := int(clientID.Add(1))
		l := newLoadClient(c, uint64(id))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				body(l, id)
			}
		}()
	}
	// pause backs off after an unknown outcome (a replica or etcd away).
	pause := func(o outcome) {
		if o == outUnknown || o == outUnreached {
			time.Sleep(100 * time.Millisecond)
		}
	}
	tok := c.root

	// Crypto: encrypt, decrypt what was encrypted, data keys.
	for w := range 2 {
		var mine []sealed
		worker("crypto", func(l *loadClient, id int) {
			i := l.pick()
			pt := make([]byte, 16+l.rnd.IntN(32))
			for j := range pt {
				pt[j] = byte(l.rnd.Uint32())
			}
			ectx := map[string]string{"worker": fmt.Sprint(w)}
			key := cryptoKeys[l.rnd.IntN(len(cryptoKeys))]
			var er client.EncryptResponse
			err := l.do(i, tok, "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: key, Plaintext: pt, Context: ectx}, &er)
			st.count("encrypt", classify(err))
			if err == nil {
				s := sealed{ct: er.Ciphertext, pt: pt, ctx: ectx}
				mine = append(mine, s)
				st.mu.Lock()
				st.sealed = append(st.sealed, s)
				st.mu.Unlock()
			}
			pause(classify(err))
			if len(mine) > 0 {
				s := mine[l.rnd.IntN(len(mine))]
				var dr client.DecryptResponse
				j := l.pick()
				err := l.do(j, tok, "POST", "/v1/kms/decrypt", client.DecryptRequest{Ciphertext: s.ct, Context: s.ctx}, &dr)
				st.count("decrypt", classify(err))
				if err == nil && !bytes.Equal(dr.Plaintext, s.pt) {
					t.Errorf("%s decrypted a ciphertext to other bytes than were encrypted", c.replicas[j].id)
				} else if classify(err) == outRefused {
					t.Errorf("%s refused to decrypt an acknowledged ciphertext: %v", c.replicas[j].id, err)
				}
				pause(classify(err))
			}
			if l.rnd.IntN(4) == 0 {
				var dk client.DataKeyResponse
				err := l.do(l.pick(), tok, "POST", "/v1/kms/datakey", client.DataKeyRequest{KeyID: key, Context: ectx}, &dk)
				st.count("datakey", classify(err))
				if err == nil {
					st.mu.Lock()
					st.sealed = append(st.sealed, sealed{ct: dk.Ciphertext, pt: dk.Plaintext, ctx: ectx})
					st.mu.Unlock()
				}
				pause(classify(err))
			}
		})
	}
	// Rotations and describes of two keys.
	for range 2 {
		worker("rotate", func(l *loadClient, id int) {
			key := rotKeys[l.rnd.IntN(len(rotKeys))]
			i := l.pick()
			in := linInput{Obj: "key:" + key, Kind: opRotate, Replica: i}
			var k client.Key
			call := h.now()
			err := l.do(i, tok, "POST", keyPath(key)+"/rotate", nil, &k)
			ret := h.now()
			o := classify(err)
			st.count("rotate", o)
			switch o {
			case outOK:
				h.add(id, in, call, linOutput{N: int(k.PrimaryVersion)}, ret)
				st.mu.Lock()
				st.rotAcked[key]++
				st.mu.Unlock()
			case outUnknown:
				h.add(id, in, call, linOutput{Unknown: true}, ret)
				st.mu.Lock()
				st.rotUnknown[key]++
				st.mu.Unlock()
			}
			pause(o)
			i = l.pick()
			in = linInput{Obj: "key:" + key, Kind: opDescribe, Replica: i}
			call = h.now()
			err = l.do(i, tok, "GET", keyPath(key), nil, &k)
			ret = h.now()
			st.count("describe", classify(err))
			if err == nil {
				h.add(id, in, call, linOutput{N: int(k.PrimaryVersion)}, ret)
			}
			pause(classify(err))
			time.Sleep(20 * time.Millisecond)
		})
	}
	// Key creation.
	worker("create", func(l *loadClient, id int) {
		var k client.Key
		err := l.do(l.pick(), tok, "POST", "/v1/keys", client.CreateKeyRequest{Description: "chaos created"}, &k)
		o := classify(err)
		st.count("key-create", o)
		st.mu.Lock()
		if o == outOK {
			st.keys = append(st.keys, k.ID)
		} else if o == outUnknown {
			st.keysLost++
		}
		st.mu.Unlock()
		pause(o)
		time.Sleep(50 * time.Millisecond)
	})
	// An alias moved between two keys, and resolved. A refusal with the
	// status that says the alias was (not) there is a "no" answer; other
	// refusals and unreached replicas applied nothing and are left out.
	recAlias := func(id int, in linInput, call int64, o outcome, err error, no int, ret int64) {
		switch {
		case o == outOK || o == outUnknown:
			h.add(id, in, call, linOutput{OK: o == outOK, Unknown: o == outUnknown}, ret)
		case o == outRefused && rawapi.StatusOf(err) == no:
			in.Kind = map[string]string{opAliasCreate: opAliasCreateNo, opAliasDelete: opAliasDeleteNo}[in.Kind]
			in.Arg = ""
			h.add(id, in, call, linOutput{}, ret)
		}
	}
	aliasTarget := aliasB
	aliasEpoch, aliasN := time.Now(), 0
	worker("alias-move", func(l *loadClient, id int) {
		if time.Since(aliasEpoch) > epoch {
			// A new alias: its first delete finds nothing, then it is
			// created and moved like the previous one.
			aliasEpoch, aliasN = time.Now(), aliasN+1
			name := fmt.Sprintf("alias/chaos-lin-%d", aliasN)
			aliasName.Store(&name)
		}
		alias := *aliasName.Load()
		i := l.pick()
		call := h.now()
		err := l.do(i, tok, "DELETE", "/v1/aliases/"+url.PathEscape(alias), nil, nil)
		ret := h.now()
		o := classify(err)
		st.count("alias-delete", o)
		recAlias(id, linInput{Obj: alias, Kind: opAliasDelete, Replica: i}, call, o, err, 404, ret)
		pause(o)
		i = l.pick()
		call = h.now()
		err = l.do(i, tok, "POST", "/v1/aliases", client.Alias{Name: alias, KeyID: aliasTarget}, nil)
		ret = h.now()
		o = classify(err)
		st.count("alias-create", o)
		recAlias(id, linInput{Obj: alias, Kind: opAliasCreate, Arg: aliasTarget, Replica: i}, call, o, err, 409, ret)
		if aliasTarget == aliasA {
			aliasTarget = aliasB
		} else {
			aliasTarget = aliasA
		}
		pause(o)
		// A few moves per freshness bound: the checker's search grows with
		// the writes a read's window spans.
		time.Sleep(250 * time.Millisecond)
	})
	worker("alias-resolve", func(l *loadClient, id int) {
		alias := *aliasName.Load()
		i := l.pick()
		var k client.Key
		call := h.now()
		err := l.do(i, tok, "GET", keyPath(alias), nil, &k)
		ret := h.now()
		st.count("alias-resolve", classify(err))
		switch {
		case err == nil:
			h.add(id, linInput{Obj: alias, Kind: opResolve, Replica: i}, call, linOutput{S: k.ID}, ret)
		case rawapi.StatusOf(err) == 404:
			h.add(id, linInput{Obj: alias, Kind: opResolve, Replica: i}, call, linOutput{S: ""}, ret)
		}
		pause(classify(err))
		// Reads whose windows overlap by the dozen make the checker's
		// search explode; a few per bound are enough to catch a stale one.
		time.Sleep(150 * time.Millisecond)
	})
	// A policy toggled between allow and deny, and evaluated through an
	// encryption by a token that carries it.
	allow := false
	polEpoch, polN := time.Now(), 0
	worker("policy-put", func(l *loadClient, id int) {
		cur := pol.Load()
		name := cur.name
		if time.Since(polEpoch) > epoch {
			// A new policy, allowing, and a token that carries it, made on
			// one replica (which knows the policy it just stored).
			next := fmt.Sprintf("chaos-lin-%d", polN+1)
			i := l.pick()
			call := h.now()
			err := l.do(i, tok, "PUT", "/v1/policies/"+next, client.PutPolicyRequest{Document: policyDoc("allow", polKey)}, nil)
			ret := h.now()
			o := classify(err)
			st.count("policy-put", o)
			if o == outOK || o == outUnknown {
				h.add(id, linInput{Obj: "policy/" + next, Kind: opPolicyPut, Arg: "allow", Replica: i}, call, linOutput{OK: o == outOK, Unknown: o == outUnknown}, ret)
			}
			var tr client.CreateTokenResponse
			if o == outOK && l.do(i, tok, "POST", "/v1/auth/token/create", client.CreateTokenRequest{TTL: "1h", DisplayName: "chaos-policy", Policies: []string{next}}, &tr) == nil {
				polEpoch, polN, allow = time.Now(), polN+1, false
				pol.Store(&policyUnderTest{name: next, token: tr.Token})
			}
			pause(o)
			return
		}
		effect := map[bool]string{true: "allow", false: "deny"}[allow]
		i := l.pick()
		call := h.now()
		err := l.do(i, tok, "PUT", "/v1/policies/"+name, client.PutPolicyRequest{Document: policyDoc(effect, polKey)}, nil)
		ret := h.now()
		o := classify(err)
		st.count("policy-put", o)
		if o == outRefused {
			t.Errorf("%s refused a policy write: %v", c.replicas[i].id, err)
		} else if o != outUnreached {
			h.add(id, linInput{Obj: "policy/" + name, Kind: opPolicyPut, Arg: effect, Replica: i}, call, linOutput{OK: o == outOK, Unknown: o == outUnknown}, ret)
		}
		allow = !allow
		pause(o)
		time.Sleep(100 * time.Millisecond)
	})
	worker("policy-eval", func(l *loadClient, id int) {
		cur := pol.Load()
		i := l.pick()
		call := h.now()
		err := l.do(i, cur.token, "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: polKey, Plaintext: []byte("p")}, nil)
		ret := h.now()
		st.count("policy-eval", classify(err))
		if err == nil || rawapi.StatusOf(err) == 403 {
			h.add(id, linInput{Obj: "policy/" + cur.name, Kind: opEvaluate, Replica: i}, call, linOutput{OK: err == nil}, ret)
		}
		pause(classify(err))
		time.Sleep(30 * time.Millisecond)
	})
	// Tokens issued, used, revoked and used again, each on any replica.
	worker("tokens", func(l *loadClient, id int) {
		i := l.pick()
		var tr client.CreateTokenResponse
		call := h.now()
		err := l.do(i, tok, "POST", "/v1/auth/token/create", client.CreateTokenRequest{TTL: "1h", DisplayName: "chaos", Policies: []string{"chaos-use"}}, &tr)
		ret := h.now()
		st.count("token-create", classify(err))
		if err != nil {
			pause(classify(err))
			return
		}
		obj := "token:" + tr.Accessor
		h.add(id, linInput{Obj: obj, Kind: opTokenCreate, Replica: i}, call, linOutput{OK: true}, ret)
		use := func() {
			i := l.pick()
			call := h.now()
			err := l.do(i, tr.Token, "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: cryptoKeys[0], Plaintext: []byte("t")}, nil)
			ret := h.now()
			st.count("token-use", classify(err))
			if err == nil || refusedAuth(err) {
				h.add(id, linInput{Obj: obj, Kind: opUse, Replica: i}, call, linOutput{OK: err == nil}, ret)
			}
			pause(classify(err))
		}
		for range 1 + l.rnd.IntN(3) {
			use()
		}
		// Revoke, on any replica; one that has not seen the token yet
		// answers "no such token" (checked as a read within the bound) and
		// the revocation is tried again.
		var o outcome
		for attempt := 0; ; attempt++ {
			i = l.pick()
			call = h.now()
			err = l.do(i, tok, "POST", "/v1/auth/token/revoke", client.RevokeTokenRequest{Accessor: tr.Accessor}, nil)
			ret = h.now()
			o = classify(err)
			st.count("token-revoke", o)
			if o == outRefused && rawapi.StatusOf(err) == 404 {
				h.add(id, linInput{Obj: obj, Kind: opRevokeNone, Replica: i}, call, linOutput{}, ret)
			} else if o == outRefused {
				t.Errorf("%s refused to revoke a token: %v", c.replicas[i].id, err)
			} else if o != outUnreached {
				h.add(id, linInput{Obj: obj, Kind: opRevoke, Replica: i}, call, linOutput{OK: o == outOK, Unknown: o == outUnknown}, ret)
			}
			if o == outOK || o == outUnknown || attempt == 10 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		st.mu.Lock()
		st.tokens = append(st.tokens, issuedToken{token: tr.Token, accessor: tr.Accessor, revoked: o == outOK})
		st.mu.Unlock()
		for range 1 + l.rnd.IntN(3) {
			use()
		}
	})

	// The faults.
	began := time.Now()
	at := func(frac float64) {
		if d := time.Until(began.Add(time.Duration(frac * float64(D)))); d > 0 {
			time.Sleep(d)
		}
	}
	elapsed := func() string { return time.Since(began).Round(100 * time.Millisecond).String() }
	at(0.10)
	leader := c.Leader()
	fromMembers := leader >= 0
	if !fromMembers {
		t.Logf("%s: no replica names a job leader (GET /v1/sys/members): killing replica 0", elapsed())
		leader = 0
	}
	killed := time.Now()
	c.Kill(leader)
	t.Logf("%s: SIGKILL %s (job leader)", elapsed(), c.replicas[leader].id)
	failover := time.Duration(-1)
	if !fromMembers {
		// Nothing to measure.
	} else if err := proc.WaitFor(3*chaosLeaseTTL+patience()/4, 100*time.Millisecond, func() error {
		if l := c.Leader(); l >= 0 && l != leader {
			return nil
		}
		return fmt.Errorf("no other replica took the job leadership")
	}); err == nil {
		failover = time.Since(killed)
		t.Logf("%s: job leadership taken over after %s (lease TTL %s)", elapsed(), failover.Round(10*time.Millisecond), chaosLeaseTTL)
	} else {
		t.Logf("%s: %v", elapsed(), err)
	}
	at(0.20)
	c.Restart(leader)
	t.Logf("%s: %s restarted and unsealed", elapsed(), c.replicas[leader].id)

	at(0.30)
	paused := (leader + 1) % len(c.replicas)
	c.Pause(paused)
	t.Logf("%s: SIGSTOP %s for %s (past its lease)", elapsed(), c.replicas[paused].id, chaosLeaseTTL+2*time.Second)
	time.Sleep(chaosLeaseTTL + 2*time.Second)
	c.Resume(paused)
	t.Logf("%s: SIGCONT %s", elapsed(), c.replicas[paused].id)

	at(0.50)
	etcd.Stop(1)
	t.Logf("%s: etcd member m1 stopped", elapsed())
	at(0.65)
	if err := etcd.Start(1); err != nil {
		t.Fatal(err)
	}
	if err := etcd.WaitHealthy(patience()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: etcd member m1 back", elapsed())

	at(0.75)
	for i := range c.replicas {
		c.Kill(i)
	}
	for i := range etcd.Len() {
		etcd.Stop(i)
	}
	t.Logf("%s: everything stopped", elapsed())
	for i := range etcd.Len() {
		if err := etcd.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := etcd.WaitHealthy(patience()); err != nil {
		t.Fatal(err)
	}
	for i := range c.replicas {
		c.Restart(i)
	}
	t.Logf("%s: everything restarted and unsealed", elapsed())
	at(1.0)
	close(stop)
	wg.Wait()
	t.Logf("%s: load stopped; operations:%s", elapsed(), st.opsSummary())

	// Afterwards. Caches have had their bound to catch up.
	time.Sleep(chaosFreshness + time.Second)
	versions := checkChaosOutcome(t, c, st, rotKeys, cryptoKeys[0])
	for key, n := range versions {
		// Exactly n-1-acked of the pending rotations took effect: keep the
		// earliest called (they can be placed wherever later ones can) and
		// drop the others, which never happened. Sound, and it keeps the
		// search small.
		h.keepPending("key:"+key, opRotate, n-1-st.rotAcked[key])
	}
	checkAutoRotations(t, c, autoKeys, autoCreated)
	h.check(t, 2*time.Minute)
	if failover >= 0 {
		t.Logf("job leader failover: %s", failover.Round(10*time.Millisecond))
	}
}

// checkChaosOutcome checks, on every replica, what the workers were told.
// It returns each rotated key's number of versions.
func checkChaosOutcome(t *testing.T, c *cofferCluster, st *chaosState, rotKeys []string, useKey string) map[string]int {
	st.mu.Lock()
	defer st.mu.Unlock()
	// Every acknowledged key exists on every replica. One missing is
	// waited for (a lagging cache) before it counts as missing.
	late, missing := 0, 0
	for _, r := range c.replicas {
		for _, id := range st.keys {
			get := func() error {
				var k client.Key
				if err := r.api.Do(t.Context(), "GET", keyPath(id), nil, &k); err != nil {
					return err
				}
				if k.ID != id {
					return fmt.Errorf("answered key %s", k.ID)
				}
				return nil
			}
			if get() == nil {
				continue
			}
			if err := proc.WaitFor(10*time.Second, 200*time.Millisecond, get); err != nil {
				missing++
				var where []string
				for _, o := range c.replicas {
					if o.api.Do(t.Context(), "GET", keyPath(id), nil, nil) == nil {
						where = append(where, o.id)
					}
				}
				t.Errorf("%s: acknowledged key %s: %v (the key is served by %v)", r.id, id, err, where)
			} else {
				late++
				t.Errorf("%s: acknowledged key %s appeared only after its freshness bound had passed", r.id, id)
			}
		}
	}
	t.Logf("keys created: %d acknowledged (%d more with an unknown outcome); on %d replicas: %d missing, %d late",
		len(st.keys), st.keysLost, len(c.replicas), missing, late)

	// Every rotation acknowledged made exactly one version; unknown ones
	// made one or none.
	versions := map[string]int{}
	for _, key := range rotKeys {
		acked, unknown := st.rotAcked[key], st.rotUnknown[key]
		var first []client.KeyVersion
		for _, r := range c.replicas {
			var k client.Key
			r.api.Must(t, "GET", keyPath(key), nil, &k)
			n := len(k.Versions)
			if n < 1+acked || n > 1+acked+unknown {
				t.Errorf("%s: key %s has %d versions after %d acknowledged and %d unknown rotations; want %d..%d",
					r.id, key, n, acked, unknown, 1+acked, 1+acked+unknown)
			}
			for i, v := range k.Versions {
				if v.Version != uint32(i+1) {
					t.Errorf("%s: key %s versions are not 1..%d in order: %+v", r.id, key, n, k.Versions)
					break
				}
			}
			if int(k.PrimaryVersion) != n {
				t.Errorf("%s: key %s primary version %d of %d", r.id, key, k.PrimaryVersion, n)
			}
			if first == nil {
				first = k.Versions
			} else if len(first) != n {
				t.Errorf("%s: key %s has %d versions, another replica %d", r.id, key, n, len(first))
			}
		}
		versions[key] = len(first)
		t.Logf("key %s: %d versions = 1 + %d acknowledged rotations + %d of %d with an unknown outcome",
			key, len(first), acked, len(first)-1-acked, unknown)
	}

	// Every ciphertext decrypts on every replica.
	for _, r := range c.replicas {
		bad := 0
		for i := 0; i < len(st.sealed); i += 100 {
			batch := st.sealed[i:min(i+100, len(st.sealed))]
			var req client.BatchDecryptRequest
			for _, s := range batch {
				req.Items = append(req.Items, client.DecryptRequest{Ciphertext: s.ct, Context: s.ctx})
			}
			var resp client.BatchDecryptResponse
			r.api.Must(t, "POST", "/v1/kms/decrypt-batch", req, &resp)
			if len(resp.Results) != len(batch) {
				t.Fatalf("%s: decrypt-batch answered %d of %d", r.id, len(resp.Results), len(batch))
			}
			for j, res := range resp.Results {
				if res.Error != nil || !bytes.Equal(res.Plaintext, batch[j].pt) {
					bad++
					if bad < 5 {
						t.Errorf("%s: ciphertext %d does not decrypt to its plaintext: %v", r.id, i+j, res.Error)
					}
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d ciphertexts do not decrypt", r.id, bad, len(st.sealed))
		}
	}
	t.Logf("ciphertexts: %d (encrypt and datakey), each decrypts on %d replicas", len(st.sealed), len(c.replicas))

	// Every acknowledged revocation holds on every replica.
	revoked := 0
	for _, tk := range st.tokens {
		if !tk.revoked {
			continue
		}
		revoked++
		for _, r := range c.replicas {
			err := r.api.WithToken(tk.token).Do(t.Context(), "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: useKey, Plaintext: []byte("t")}, nil)
			if !refusedAuth(err) {
				t.Errorf("%s: token %s revoked but answered: %v", r.id, tk.accessor, err)
			}
		}
	}
	t.Logf("tokens: %d issued, %d revocations acknowledged, all refused on %d replicas", len(st.tokens), revoked, len(c.replicas))
	return versions
}

// checkAutoRotations waits for the automatic rotation due a period after
// the keys were made and checks it ran exactly once per key: one new
// version, never two within a period, whichever replica led the jobs.
func checkAutoRotations(t *testing.T, c *cofferCluster, keys []string, created time.Time) {
	const period = time.Minute
	deadline := created.Add(period).Add(patience())
	for _, key := range keys {
		var k client.Key
		err := proc.WaitFor(time.Until(deadline), 500*time.Millisecond, func() error {
			if err := c.replicas[0].api.Do(t.Context(), "GET", keyPath(key), nil, &k); err != nil {
				return err
			}
			if len(k.Versions) < 2 {
				return fmt.Errorf("key %s made %s ago with rotation period %s: %d version(s)", key, time.Since(created).Round(time.Second), period, len(k.Versions))
			}
			return nil
		})
		if err != nil {
			t.Errorf("automatic rotation: %v", err)
			continue
		}
		age := time.Since(created)
		if max := 1 + int(age/period); len(k.Versions) > max {
			t.Errorf("key %s, %s old with rotation period %s, has %d versions (at most %d due): %+v", key, age.Round(time.Second), period, len(k.Versions), max, k.Versions)
		}
		for i := 1; i < len(k.Versions); i++ {
			if gap := k.Versions[i].CreatedAt.Sub(k.Versions[i-1].CreatedAt); gap < period-5*time.Second {
				t.Errorf("key %s: versions %d and %d made %s apart, less than the period %s: a due rotation ran twice", key, i, i+1, gap, period)
			}
		}
	}
	t.Logf("automatic rotations: %d keys with period %s, each rotated once per due time", len(keys), period)
}
