package secretsync

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// leaseGVR is the coordination.k8s.io/v1 Lease of the leader election.
var leaseGVR = schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}

// elector is a leader election on one Lease, written through the dynamic
// client: client-go's leaderelection package links the typed clientset
// and with it every API type's registration, which costs the coffer
// binary about 15 MiB of memory at rest even when it never syncs.
//
// A replica takes the Lease when it has no holder or its holder has not
// renewed it for leaseDurationSeconds; the leader renews it every
// RetryPeriod, and stops leading when it could not renew it for
// RenewDeadline. Every write carries the resourceVersion read, so two
// replicas never both believe they took it: the loser's write conflicts.
type elector struct {
	cfg    Config
	leases dynamic.ResourceInterface
	// observed is the Lease last read or written, and when.
	observed     *coordinationv1.Lease
	observedTime time.Time
	leader       string // last holder logged
}

func newElector(cfg Config) *elector {
	return &elector{cfg: cfg, leases: cfg.Dynamic.Resource(leaseGVR).Namespace(cfg.LeaseNamespace)}
}

// run campaigns until ctx ends or, once leading, until the lease is lost;
// lead runs for the term with a context that ends with it, and run
// returns after lead has returned. On the way out a leader releases the
// Lease so that another replica takes over without waiting for it to
// expire.
func (e *elector) run(ctx context.Context, lead func(context.Context)) {
	if !e.acquire(ctx) {
		return
	}
	term, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(term)
	}()
	e.renew(term)
	cancel()
	<-done
	e.cfg.Logger.Info("coffer-sync stopped leading", "identity", e.cfg.Identity)
	e.release()
}

// acquire tries every RetryPeriod until this replica holds the Lease
// (true) or ctx ends (false).
func (e *elector) acquire(ctx context.Context) bool {
	t := time.NewTicker(e.cfg.RetryPeriod)
	defer t.Stop()
	for {
		if err := e.tryAcquireOrRenew(ctx); err == nil {
			return true
		} else if !errors.Is(err, errHeld) && ctx.Err() == nil {
			e.cfg.Logger.Warn("leader election: taking the lease failed", "lease", e.cfg.LeaseNamespace+"/"+e.cfg.LeaseName, "error", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// renew renews the Lease every RetryPeriod while ctx lives; it returns
// when ctx ends or when no renewal succeeded for RenewDeadline.
func (e *elector) renew(ctx context.Context) {
	t := time.NewTicker(e.cfg.RetryPeriod)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithDeadline(ctx, last.Add(e.cfg.RenewDeadline))
		err := e.tryAcquireOrRenew(rctx)
		cancel()
		switch {
		case err == nil:
			last = time.Now()
		case ctx.Err() != nil:
			return
		case errors.Is(err, errHeld) || time.Since(last) >= e.cfg.RenewDeadline:
			e.cfg.Logger.Warn("leader election: lost the lease", "lease", e.cfg.LeaseNamespace+"/"+e.cfg.LeaseName, "error", err)
			return
		}
	}
}

// errHeld: another replica holds a Lease that has not expired.
var errHeld = errors.New("the lease is held by another replica")

// tryAcquireOrRenew writes this replica as the Lease's holder, creating
// the Lease when there is none, unless another holder's lease is live.
func (e *elector) tryAcquireOrRenew(ctx context.Context) error {
	now := metav1.NewMicroTime(time.Now())
	id := e.cfg.Identity
	dur := int32(e.cfg.LeaseDuration / time.Second)
	u, err := e.leases.Get(ctx, e.cfg.LeaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		zero := int32(0)
		l := &coordinationv1.Lease{
			TypeMeta:   metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
			ObjectMeta: metav1.ObjectMeta{Namespace: e.cfg.LeaseNamespace, Name: e.cfg.LeaseName},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &dur,
				AcquireTime: &now, RenewTime: &now, LeaseTransitions: &zero},
		}
		created, err := e.write(ctx, l, true)
		if err != nil {
			return err
		}
		e.observe(created)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the lease: %w", err)
	}
	var cur coordinationv1.Lease
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cur); err != nil {
		return fmt.Errorf("reading the lease: %w", err)
	}
	if e.observed == nil || e.observed.ResourceVersion != cur.ResourceVersion ||
		deref(e.observed.Spec.HolderIdentity) != deref(cur.Spec.HolderIdentity) ||
		!e.observed.Spec.RenewTime.Equal(cur.Spec.RenewTime) {
		// Expiry is judged on this replica's clock: from when it saw
		// the Lease change, not from the holder's renewTime.
		e.observe(&cur)
	}
	holder := deref(cur.Spec.HolderIdentity)
	if holder != "" && holder != id && time.Now().Before(e.observedTime.Add(time.Duration(deref(cur.Spec.LeaseDurationSeconds))*time.Second)) {
		return errHeld
	}
	next := cur.DeepCopy()
	if holder != id {
		n := deref(cur.Spec.LeaseTransitions)
		if holder != "" {
			n++
		}
		next.Spec.LeaseTransitions = &n
		next.Spec.AcquireTime = &now
	}
	next.Spec.HolderIdentity = &id
	next.Spec.LeaseDurationSeconds = &dur
	next.Spec.RenewTime = &now
	updated, err := e.write(ctx, next, false)
	if err != nil {
		// A conflict is another replica's write: the next try reads it.
		return err
	}
	e.observe(updated)
	return nil
}

// release clears the holder of a Lease this replica holds, so that a
// follower takes it at once.
func (e *elector) release() {
	if e.observed == nil || deref(e.observed.Spec.HolderIdentity) != e.cfg.Identity {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewDeadline)
	defer cancel()
	now := metav1.NewMicroTime(time.Now())
	next := e.observed.DeepCopy()
	empty, one := "", int32(1)
	next.Spec.HolderIdentity = &empty
	next.Spec.LeaseDurationSeconds = &one
	next.Spec.AcquireTime, next.Spec.RenewTime = &now, &now
	if _, err := e.write(ctx, next, false); err != nil {
		e.cfg.Logger.Warn("leader election: releasing the lease failed", "lease", e.cfg.LeaseNamespace+"/"+e.cfg.LeaseName, "error", err)
	}
}

// write creates or updates (with l's resourceVersion as precondition) the
// Lease.
func (e *elector) write(ctx context.Context, l *coordinationv1.Lease, create bool) (*coordinationv1.Lease, error) {
	l.APIVersion, l.Kind = "coordination.k8s.io/v1", "Lease"
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(l)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	if create {
		u, err = e.leases.Create(ctx, u, metav1.CreateOptions{})
	} else {
		u, err = e.leases.Update(ctx, u, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("writing the lease: %w", err)
	}
	var out coordinationv1.Lease
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// observe notes l as the Lease last seen and logs a change of leader.
func (e *elector) observe(l *coordinationv1.Lease) {
	e.observed, e.observedTime = l, time.Now()
	if h := deref(l.Spec.HolderIdentity); h != e.leader {
		e.leader = h
		if h != "" && h != e.cfg.Identity {
			e.cfg.Logger.Info("coffer-sync follows", "leader", h)
		}
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
