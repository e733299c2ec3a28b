package secretsync

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestElectorReleasesAndLoses: a leader that stops clears the Lease's
// holder (a follower need not wait for it to expire), and a leader whose
// Lease another replica took ends its term.
func TestElectorReleasesAndLoses(t *testing.T) {
	e := newEnv(t)
	e.cfg.LeaseDuration, e.cfg.RenewDeadline, e.cfg.RetryPeriod = 2*time.Second, time.Second, 50*time.Millisecond
	if err := e.cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	runFor := func(ctx context.Context) (leading chan struct{}, done chan struct{}) {
		leading, done = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			newElector(e.cfg).run(ctx, func(term context.Context) {
				close(leading)
				<-term.Done()
			})
		}()
		return leading, done
	}
	wait := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	leading, done := runFor(ctx)
	wait(leading, "the lead")
	cancel()
	wait(done, "the elector to return")
	l, err := e.lease()
	if err != nil || deref(l.Spec.HolderIdentity) != "" {
		t.Fatalf("after a graceful stop the lease is held by %q (%v)", deref(l.Spec.HolderIdentity), err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	leading, done = runFor(ctx)
	wait(leading, "the lead again")
	l, err = e.lease()
	if err != nil {
		t.Fatal(err)
	}
	other, now := "other", metav1.NewMicroTime(time.Now())
	l.Spec.HolderIdentity, l.Spec.RenewTime = &other, &now
	l.APIVersion, l.Kind = "coordination.k8s.io/v1", "Lease"
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(l)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.dyn.Resource(leaseGVR).Namespace("coffer-system").Update(context.Background(), &unstructured.Unstructured{Object: m}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait(done, "the term to end once another replica holds the lease")
	if l, err := e.lease(); err != nil || deref(l.Spec.HolderIdentity) != "other" {
		t.Fatalf("the lost lease was released or taken back: holder %q (%v)", deref(l.Spec.HolderIdentity), err)
	}
}
