package monitor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/audit"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func rec(sec float64, acc, src, action, res, code string) *audit.Record {
	r := &audit.Record{Type: audit.TypeRequest, Time: t0.Add(time.Duration(sec * float64(time.Second))), Source: src,
		Principal: audit.Principal{Kind: "token", Accessor: acc}, Action: action, Resource: res, KeyID: res, Outcome: "ok"}
	if code != "" {
		r.Outcome, r.ErrorCode = "error", code
		r.KeyID = ""
	}
	if acc == "" {
		r.Principal.Kind = "anonymous"
	}
	return r
}

// normal is a steady, benign stream: two services decrypting with their
// own keys at a constant rate from their own addresses, for an hour.
func normal() []*audit.Record {
	var out []*audit.Record
	for i := range 3600 {
		s := float64(i)
		out = append(out, rec(s, "acc_a", "10.0.1.5", "kms:Decrypt", "key-a", ""))
		if i%2 == 0 {
			out = append(out, rec(s+0.5, "acc_b", "10.0.2.7", "kms:Encrypt", "key-b", ""))
		}
	}
	return out
}

func run(t *testing.T, r Rules, stream []*audit.Record) map[string]int {
	t.Helper()
	e, err := NewEngine(r, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, x := range stream {
		for _, a := range e.Observe(context.Background(), x) {
			got[a.Rule]++
		}
	}
	return got
}

func TestRulesSilentOnNormalStream(t *testing.T) {
	if got := run(t, DefaultRules(), normal()); len(got) != 0 {
		t.Fatalf("alerts on a normal stream: %v", got)
	}
}

func TestEachRuleFires(t *testing.T) {
	leakFile := filepath.Join(t.TempDir(), "leaked")
	os.WriteFile(leakFile, []byte("# from coffer scan --report\n{\"accessor\":\"acc_leak\"}\n"), 0o600)
	cases := []struct {
		rule   string
		stream func() []*audit.Record
		rules  func(*Rules)
	}{
		{RuleSpike, func() []*audit.Record {
			s := normal()
			for i := range 2000 { // acc_a decrypts 2000 times in 10s
				s = append(s, rec(3600+float64(i)/200, "acc_a", "10.0.1.5", "kms:Decrypt", "key-a", ""))
			}
			return s
		}, nil},
		{RuleEnumeration, func() []*audit.Record {
			s := normal()
			for i := range 60 {
				s = append(s, rec(3600+float64(i), "acc_b", "10.0.2.7", "key:Describe", fmt.Sprintf("key-%d", i), ""))
			}
			return s
		}, nil},
		{RuleDenied, func() []*audit.Record {
			s := normal()
			for i := range 25 {
				s = append(s, rec(3600+float64(i), "", "203.0.113.9", "kms:Decrypt", "", "unauthenticated"))
			}
			return s
		}, nil},
		{RuleNewSource, func() []*audit.Record {
			return append(normal(), rec(3700, "acc_a", "198.51.100.20", "kms:Decrypt", "key-a", ""))
		}, nil},
		{RuleNewSource + " (idle)", func() []*audit.Record {
			return []*audit.Record{rec(0, "acc_c", "10.0.3.1", "kms:Decrypt", "k", ""), rec(40*24*3600, "acc_c", "10.0.3.1", "kms:Decrypt", "k", "")}
		}, nil},
		{RuleRoot, func() []*audit.Record {
			r := rec(10, "acc_root", "127.0.0.1", "key:List", "", "")
			r.Principal.Kind = "root"
			return append(normal(), r)
		}, nil},
		{RuleKeyState, func() []*audit.Record {
			return append(normal(), rec(3601, "acc_a", "10.0.1.5", "kms:Decrypt", "key-a", "key_disabled"))
		}, nil},
		{RuleKeyState + " (deletion)", func() []*audit.Record {
			return append(normal(), rec(3601, "acc_b", "10.0.2.7", "key:ScheduleDeletion", "key-b", ""))
		}, nil},
		{RuleLeaked, func() []*audit.Record {
			return append(normal(), rec(3601, "acc_leak", "10.0.9.9", "kms:Decrypt", "key-a", ""))
		}, func(r *Rules) { r.LeakedCredential.File = leakFile; r.LeakedCredential.Respond = RespondRevoke }},
		{RuleLeaked + " (reported by coffer scan)", func() []*audit.Record {
			// The server marks a request presenting a token revoked by a
			// leak report; no leaked-credentials file is needed.
			r := rec(3601, "acc_scanned", "10.0.9.9", "kms:Decrypt", "", "unauthenticated")
			r.CredentialLeaked = true
			return append(normal(), r)
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			r := DefaultRules()
			if c.rules != nil {
				c.rules(&r)
			}
			got := run(t, r, c.stream())
			name := c.rule
			if i := len(name); i > 0 {
				for j, ch := range name {
					if ch == ' ' {
						name = name[:j]
						break
					}
				}
			}
			if got[name] == 0 || len(got) != 1 {
				t.Fatalf("want only %s alerts, got %v", name, got)
			}
		})
	}
}

func TestRotationOverdue(t *testing.T) {
	e, _ := NewEngine(DefaultRules(), nil, nil, nil)
	ks := []KeyState{
		{ID: "late", State: "enabled", LastRotated: t0, RotationPeriod: 24 * time.Hour},
		{ID: "fine", State: "enabled", LastRotated: t0.Add(20 * time.Hour), RotationPeriod: 24 * time.Hour},
		{ID: "manual", State: "enabled", LastRotated: t0},
	}
	as := e.CheckKeys(context.Background(), ks, t0.Add(26*time.Hour))
	if len(as) != 1 || as[0].Subject != "late" {
		t.Fatalf("%+v", as)
	}
}

func TestAutoResponseCalled(t *testing.T) {
	r := DefaultRules()
	r.LeakedCredential.Accessors = []string{"acc_x"}
	r.LeakedCredential.Respond = RespondRevoke
	var revoked string
	e, _ := NewEngine(r, nil, func(_ context.Context, a Alert) error { revoked = a.Accessor; return nil }, nil)
	as := e.Observe(context.Background(), rec(1, "acc_x", "10.0.0.1", "kms:Decrypt", "k", ""))
	if revoked != "acc_x" || len(as) != 1 || as[0].Response != "revoked acc_x" {
		t.Fatalf("revoked=%q alerts=%+v", revoked, as)
	}
}

func BenchmarkObserve(b *testing.B) {
	e, _ := NewEngine(DefaultRules(), nil, nil, nil)
	r := rec(0, "acc_root", "127.0.0.1", "kms:Encrypt", "key-a", "")
	r.Principal.Kind = "root"
	for i := 0; b.Loop(); i++ {
		r.Time = t0.Add(time.Duration(i) * time.Microsecond)
		e.Observe(context.Background(), r)
	}
}

// TestEngineMemoryBounded: per-credential and per-alert state stays under
// maxTracked however many distinct credentials and sources appear.
func TestEngineMemoryBounded(t *testing.T) {
	e, err := NewEngine(DefaultRules(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxTracked + 500 {
		// A distinct credential denied from a distinct IPv6 /64 each time.
		r := rec(float64(i)/1000, fmt.Sprintf("acc_%d", i), fmt.Sprintf("2001:db8:%x:%x::1", i>>16, i&0xffff), "kms:Decrypt", "k1", "permission_denied")
		e.Observe(context.Background(), r)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.creds) >= maxTracked || len(e.last) >= maxTracked || len(e.denied) >= maxTracked {
		t.Fatalf("state grew past %d: creds %d, last %d, denied %d", maxTracked, len(e.creds), len(e.last), len(e.denied))
	}
}

// TestSealRule: a failed auto-unseal (an event record) and the start of a
// quorum operation raise the seal rule; a successful auto-unseal, an
// ordinary request and a disabled rule do not.
func TestSealRule(t *testing.T) {
	ctx := context.Background()
	e, _ := NewEngine(DefaultRules(), nil, nil, nil)
	failed := &audit.Record{Type: audit.TypeEvent, Time: t0, Door: "seal", Action: "sys:AutoUnseal",
		Principal: audit.Principal{Kind: "system", ID: "pkcs11"}, Outcome: "error", Detail: "the PIN was refused"}
	as := e.Observe(ctx, failed)
	if len(as) != 1 || as[0].Rule != RuleSeal || as[0].Severity != "critical" || !strings.Contains(as[0].Summary, "pkcs11") {
		t.Fatalf("failed auto-unseal: %+v", as)
	}
	ok := *failed
	ok.Outcome, ok.Time = "ok", t0.Add(time.Hour)
	if as := e.Observe(ctx, &ok); len(as) != 0 {
		t.Fatalf("successful auto-unseal: %+v", as)
	}
	start := &audit.Record{Type: audit.TypeRequest, Time: t0, Action: "sys:GenerateRootStart", Source: "10.0.0.9", Outcome: "ok"}
	if as := e.Observe(ctx, start); len(as) != 1 || as[0].Rule != RuleSeal {
		t.Fatalf("generate-root started: %+v", as)
	}
	other := &audit.Record{Type: audit.TypeRequest, Time: t0, Action: "sys:SealStatus", Source: "10.0.0.9", Outcome: "ok"}
	if as := e.Observe(ctx, other); len(as) != 0 {
		t.Fatalf("seal-status: %+v", as)
	}
	r := DefaultRules()
	r.Seal.Disabled = true
	d, _ := NewEngine(r, nil, nil, nil)
	if as := d.Observe(ctx, failed); len(as) != 0 {
		t.Fatalf("disabled rule fired: %+v", as)
	}
}
