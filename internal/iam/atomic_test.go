package iam

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
)

// failingStore lets budget writes succeed and fails the rest; a negative
// budget never fails.
type failingStore struct {
	*inmem.Backend
	budget atomic.Int64
}

var errDisk = errors.New("injected: disk full")

func (s *failingStore) Apply(ctx context.Context, ops ...storage.Op) error {
	if s.budget.Load() >= 0 && s.budget.Add(-1) < 0 {
		s.budget.Store(0)
		return errDisk
	}
	return s.Backend.Apply(ctx, ops...)
}

// TestLeakReportAndUsageFlushAreAtomic: a failed write of a leak report
// disables no key, in memory or storage, and the report can be sent again;
// a failed usage flush keeps the uses for the next one.
func TestLeakReportAndUsageFlushAreAtomic(t *testing.T) {
	e := newEnv(t)
	st := &failingStore{Backend: e.store}
	st.budget.Store(-1)
	e.iam = New(st, e.tokens, e.keys, func() time.Time { return e.now })
	var fps []string
	var keys []CreatedAccessKey
	for range 3 {
		k, err := e.iam.CreateAccessKey(ctx, CreateAccessKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		sum := sha256.Sum256([]byte(k.SecretAccessKey))
		fps = append(fps, hex.EncodeToString(sum[:]))
	}
	src := netip.MustParseAddr("10.0.0.1")
	reload := func() *Service {
		t.Helper()
		n := New(e.store, e.tokens, e.keys, func() time.Time { return e.now })
		if err := n.Load(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// The disk fails on the first write, then on the second: either the
	// whole report lands or none of it, and memory agrees with storage.
	for _, budget := range []int64{0, 1} {
		st.budget.Store(budget)
		_, _, err := e.iam.ReportLeaked(ctx, fps)
		if budget == 0 && !errors.Is(err, errDisk) {
			t.Fatalf("report with a failing disk: %v", err)
		}
		if err == nil {
			break
		}
		for _, svc := range []*Service{e.iam, reload()} {
			for _, k := range keys {
				if _, aerr := svc.AuthenticateAccessKey(k.ID, k.SecretAccessKey, src); aerr != nil {
					t.Fatalf("budget %d: key %s half-reported after a failed write (%v): %v", budget, k.ID, err, aerr)
				}
			}
		}
	}
	// The authentications above are uses; a failed flush keeps them for
	// the next one.
	st.budget.Store(0)
	if err := e.iam.FlushUsage(ctx); !errors.Is(err, errDisk) {
		t.Fatalf("flush with a failing disk: %v", err)
	}
	st.budget.Store(-1)
	if err := e.iam.FlushUsage(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if got, _ := reload().GetAccessKey(ctx, k.ID); got.LastUsedAt == nil || got.LastSource != "10.0.0.1" {
			t.Fatalf("use of %s lost by the failed flush: %+v", k.ID, got)
		}
	}
	if off, already, err := e.iam.ReportLeaked(ctx, fps); err != nil || len(off)+already != 3 {
		t.Fatalf("report sent again: %v %d %v", off, already, err)
	}
	for _, k := range keys {
		if _, err := reload().AuthenticateAccessKey(k.ID, k.SecretAccessKey, src); !errors.Is(err, auth.ErrLeaked) {
			t.Fatalf("key %s after the report: %v", k.ID, err)
		}
	}
}

// TestChainedRoleBounded: role chaining cannot outlive, widen or unscope
// the session it started from.
func TestChainedRoleBounded(t *testing.T) {
	e := newEnv(t)
	if _, err := e.iam.CreateRole(ctx, Role{Name: "a", TTL: "1h", MaxTTL: "1h", TrustPrincipals: []string{"access-key:*", "role:a"}}); err != nil {
		t.Fatal(err)
	}
	ak := &auth.Principal{Kind: auth.KindAccessKey, ID: "cfak_A"}
	scope := "statements:\n  - effect: allow\n    actions: [auth:AssumeRole]\n    resources: [\"role/*\"]\n"
	_, first, err := e.iam.AssumeRole(ctx, ak, AssumeRoleRequest{Role: "a", Policy: scope, BoundCIDRs: []string{"10.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	cur := first
	for range 3 { // re-assume every 50 minutes
		e.now = e.now.Add(50 * time.Minute)
		_, next, err := e.iam.AssumeRole(ctx, &cur, AssumeRoleRequest{Role: "a"})
		if e.now.Before(first.MaxExpiresAt) {
			if err != nil {
				t.Fatal(err)
			}
			if next.MaxExpiresAt.After(first.MaxExpiresAt) || next.ExpiresAt.After(first.MaxExpiresAt) || len(next.Scopes) != 1 ||
				len(next.CIDRs) != 1 || next.CIDRs[0].String() != "10.0.0.0/8" {
				t.Fatalf("chained token escaped the first session: %+v (first %+v)", next, first)
			}
			cur = next
			continue
		}
		if !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("chaining past the first session's limit: %+v %v", next, err)
		}
	}
}

// TestAssumeRoleAfterDelete: a login whose role is deleted before its token
// is stored gets no token (DeleteRole's revocation would miss it).
func TestAssumeRoleAfterDelete(t *testing.T) {
	e := newEnv(t)
	if _, err := e.iam.CreateRole(ctx, Role{Name: "gone", TrustPrincipals: []string{"access-key:*"}}); err != nil {
		t.Fatal(err)
	}
	r := e.iam.state.Load().roles["gone"]
	if _, err := e.iam.DeleteRole(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	// The login read the role before the deletion.
	_, _, err := e.iam.issue(ctx, r, auth.Spec{Role: "gone", Subject: "access-key:cfak_A"}, "", nil)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("token issued for a deleted role: %v", err)
	}
}

// TestDeletePolicyWaitsForTokenIssue: a policy cannot be deleted while a
// token naming it is being stored, and a token is not stored naming a
// policy deleted before it.
func TestDeletePolicyWaitsForTokenIssue(t *testing.T) {
	e := newEnv(t)
	e.policy(t, "p", allowEncryptApp)
	checked, resume := make(chan struct{}), make(chan struct{})
	issued := make(chan error, 1)
	go func() {
		valid := e.iam.TokenPoliciesExist([]string{"p"})
		_, _, err := e.tokens.Issue(ctx, auth.Spec{Policies: []string{"p"}, Valid: func() error {
			err := valid()
			close(checked)
			<-resume
			return err
		}})
		issued <- err
	}()
	<-checked
	deleted := make(chan error, 1)
	go func() { deleted <- e.iam.DeletePolicy(ctx, "p") }()
	select {
	case err := <-deleted:
		t.Fatalf("policy deleted while a token naming it was being stored: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(resume)
	if err := <-issued; err != nil {
		t.Fatal(err)
	}
	if err := <-deleted; !errors.Is(err, ErrInUse) {
		t.Fatalf("delete after the token was stored: %v, want in use", err)
	}
	// Once a policy is gone, a token naming it is refused at the last check.
	e.policy(t, "q", allowEncryptApp)
	valid := e.iam.TokenPoliciesExist([]string{"q"})
	if err := e.iam.DeletePolicy(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.tokens.Issue(ctx, auth.Spec{Policies: []string{"q"}, Valid: valid}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("token naming a deleted policy: %v", err)
	}
}
