package secretsync

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// idCoffer answers every read with a refusal carrying a new request id, as
// the Coffer server does (X-Request-Id).
type idCoffer struct {
	*fakeCoffer
	n atomic.Int64
}

func (f *idCoffer) SecretGet(ctx context.Context, tok, name string) (*client.SecretValue, error) {
	f.gets.Add(1)
	return nil, &client.APIError{StatusCode: http.StatusForbidden, Code: "forbidden", Message: "not allowed: secret:Read on secret/" + name,
		RequestID: fmt.Sprintf("req-%d", f.n.Add(1))}
}

// TestSyncRefusalIsNotAHotLoop: a refused read is retried with backoff. The
// request id of each refusal is not put in the condition message: if it
// were, each retry would write a new status, whose update event queues the
// resource again at once, past the backoff (a read of Coffer and a status
// write as fast as they go).
func TestSyncRefusalIsNotAHotLoop(t *testing.T) {
	e := newEnv(t)
	ic := &idCoffer{fakeCoffer: e.coffer}
	e.cfg.Coffer = ic
	e.cfg.MinRetry, e.cfg.MaxRetry = 400*time.Millisecond, 2*time.Second
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db"})
	c := e.waitReason("app", "db", ReasonForbidden)
	if strings.Contains(c.Message, "req-") {
		t.Errorf("the condition message carries a request id: %q", c.Message)
	}
	start := e.coffer.gets.Load()
	time.Sleep(1500 * time.Millisecond)
	// Backoff 0.4 s, 0.8 s, 1.6 s: at most 3 reads in 1.5 s (a hot loop
	// makes hundreds).
	if n := e.coffer.gets.Load() - start; n > 4 {
		t.Fatalf("%d Coffer reads in 1.5 s for one refused CofferSecret", n)
	}
}

// TestSyncTooLargeForASecret: a version whose data exceeds the 1 MiB limit
// of a Secret is a condition naming the limit (no value), writes nothing and
// is not retried: only a new version can change it.
func TestSyncTooLargeForASecret(t *testing.T) {
	e := newEnv(t)
	big := strings.Repeat("x", 600<<10)
	e.coffer.put("app/big", map[string]string{"a": big, "b": big})
	e.start()
	e.create("app", "big", map[string]any{"secret": "app/big"})
	c := e.waitReason("app", "big", ReasonInvalidSpec)
	if !strings.Contains(c.Message, "1048576") || strings.Contains(c.Message, "xxxx") {
		t.Fatalf("condition %+v", c)
	}
	if e.secret("app", "big") != nil {
		t.Fatal("a Secret over the size limit was written")
	}
	e.settle()
	if n := e.coffer.gets.Load(); n > 2 {
		t.Fatalf("%d reads: a version too large for a Secret is retried", n)
	}
	e.coffer.put("app/big", map[string]string{"a": "small"})
	e.waitReason("app", "big", ReasonSynced)
}

// TestRestartTwiceInOneSecond: two restarts within a second (two new
// versions in quick succession) each change the pod template; with a
// timestamp in whole seconds the second patch changed nothing and the
// Deployment was not rolled again, so pods started between the two writes
// kept the older value.
func TestRestartTwiceInOneSecond(t *testing.T) {
	e := newEnv(t, deployment("app", "web"))
	c := newController(e.cfg)
	cs := &CofferSecret{}
	cs.Metadata.Namespace, cs.Metadata.Name = "app", "db"
	spec := &Spec{RolloutRestart: []RolloutTarget{{Kind: "Deployment", Name: "web"}}}
	u := &unstructured.Unstructured{}
	if err := c.restart(context.Background(), u, cs, spec); err != nil {
		t.Fatal(err)
	}
	first := restartedAt(t, e, "app", "web")
	time.Sleep(2 * time.Millisecond)
	if err := c.restart(context.Background(), u, cs, spec); err != nil {
		t.Fatal(err)
	}
	if second := restartedAt(t, e, "app", "web"); second == first {
		t.Fatalf("the second restart left restartedAt at %q", first)
	}
}

// TestSyncRestartsOnlyItsNamespace: a rolloutRestart names a workload of
// the resource's own namespace; the same name in another namespace is
// never restarted.
func TestSyncRestartsOnlyItsNamespace(t *testing.T) {
	e := newEnv(t, deployment("team-a", "web"), deployment("team-b", "web"))
	e.coffer.put("team-b/db", map[string]string{"password": "pw-1"})
	e.start()
	e.create("team-b", "db", map[string]any{"secret": "team-b/db", "rolloutRestart": []any{map[string]any{"kind": "Deployment", "name": "web"}}})
	e.waitReason("team-b", "db", ReasonSynced)
	e.coffer.put("team-b/db", map[string]string{"password": "pw-2"})
	e.eventually("team-b's restart", func() bool { return restartedAt(t, e, "team-b", "web") != "" })
	e.eventually("syncedVersion 2", func() bool { return e.status("team-b", "db").SyncedVersion == 2 })
	if r := restartedAt(t, e, "team-a", "web"); r != "" {
		t.Fatalf("team-a's Deployment was restarted by team-b's CofferSecret (%s)", r)
	}
}

// TestSyncOwnerUIDWithoutLabelIsConflict: a Secret that carries the
// resource's uid annotation but not the controller's label (someone copied
// the annotation) is not the controller's: Conflict, left untouched.
func TestSyncOwnerUIDWithoutLabelIsConflict(t *testing.T) {
	e := newEnv(t)
	e.coffer.put("app/db", map[string]string{"password": "pw"})
	cr := e.create("app", "db", map[string]any{"secret": "app/db"})
	if _, err := e.secrets("app").Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db", Annotations: map[string]string{AnnotationOwnerUID: string(cr.GetUID())}},
		Data:       map[string][]byte{"k": []byte("theirs")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.waitReason("app", "db", ReasonConflict)
	if s := e.secret("app", "db"); string(s.Data["k"]) != "theirs" || len(s.Data) != 1 {
		t.Fatalf("the Secret was changed: %v", s.Data)
	}
}

// TestSpecValidateBounds: a Coffer name over 512 bytes and a workload name
// that is not a DNS subdomain are refused.
func TestSpecValidateBounds(t *testing.T) {
	for name, s := range map[string]Spec{
		"long secret":   {Secret: strings.Repeat("a", 513)},
		"workload name": {Secret: "app/db", RolloutRestart: []RolloutTarget{{Kind: "Deployment", Name: "Bad_Name"}}},
	} {
		s.defaults("x", "sync")
		if err := s.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ok := Spec{Secret: strings.Repeat("a", 512)}
	ok.defaults("x", "sync")
	if err := ok.validate(); err != nil {
		t.Errorf("a 512-byte name: %v", err)
	}
}

// TestSyncOwnerAnnotationOfAnotherNamespace: a Secret names its owner in
// an annotation anyone who may write Secrets can set. One in team-b naming
// team-a's CofferSecret must not queue it: else each edit of it makes the
// controller read Coffer as team-a's service account past the backoff
// (audit noise and read alerts on team-a's identity, from team-b).
func TestSyncOwnerAnnotationOfAnotherNamespace(t *testing.T) {
	e := newEnv(t)
	ic := &idCoffer{fakeCoffer: e.coffer}
	e.cfg.Coffer = ic
	e.cfg.MinRetry, e.cfg.MaxRetry = 2*time.Second, 10*time.Second
	e.start()
	e.create("team-a", "db", map[string]any{"secret": "team-a/db"})
	e.waitReason("team-a", "db", ReasonForbidden)
	time.Sleep(100 * time.Millisecond)
	start := e.coffer.gets.Load()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "bait", Labels: map[string]string{LabelManagedBy: ManagedBy},
		Annotations: map[string]string{AnnotationOwner: "team-a/db"}}}
	if _, err := e.secrets("team-b").Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		sec.Data = map[string][]byte{"n": []byte(fmt.Sprint(i))}
		if _, err := e.secrets("team-b").Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if n := e.coffer.gets.Load() - start; n > 1 {
		t.Fatalf("edits of a team-b Secret made %d reads as team-a", n)
	}
}
