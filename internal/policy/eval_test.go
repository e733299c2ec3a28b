package policy

import (
	"net/netip"
	"os"
	"testing"
	"time"
)

// fixedNow is a Wednesday, 10:30 UTC.
var fixedNow = time.Date(2026, 6, 17, 10, 30, 0, 0, time.UTC)

func mustParse(t testing.TB, name, doc string) *Policy {
	t.Helper()
	p, err := Parse(name, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParseFile(t testing.TB, path string) *Policy {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	podA = Principal{Kind: "role", ID: "kubernetes:prod/team-a/web", Role: "app", Namespace: "team-a", ServiceAccount: "web",
		Attributes: map[string]string{"cluster": "prod"}}
	podB     = Principal{Kind: "role", ID: "kubernetes:prod/team-b/web", Role: "app", Namespace: "team-b", ServiceAccount: "web"}
	noNSRole = Principal{Kind: "role", ID: "ci-run-1", Role: "app"}
	ciKey    = Principal{Kind: "access-key", ID: "cfak_ci"}
	payRole  = Principal{Kind: "role", ID: "s1", Role: "payments-api"}
)

// TestEvaluateMatrix is the evaluation matrix over the committed policies.
func TestEvaluateMatrix(t *testing.T) {
	ns := mustParseFile(t, "testdata/good/namespace-decrypt.yaml")
	ci := mustParseFile(t, "testdata/good/ci-office-hours.yaml")
	admin := mustParseFile(t, "testdata/good/admin.yaml")
	ctxA := map[string]string{"namespace": "team-a"}
	ctxB := map[string]string{"namespace": "team-b"}
	ciIP := netip.MustParseAddr("10.20.3.4")
	ciIP6 := netip.MustParseAddr("fd00:20::1")
	mapped := netip.MustParseAddr("::ffff:10.20.3.4")
	otherIP := netip.MustParseAddr("192.0.2.1")
	keyID := "3f1c2a9e-0d4b-4c8e-9a51-7b2d6e8f0a13"
	// 2026-06-17 10:30 UTC is 11:30 at +01:00, a Wednesday.
	late := time.Date(2026, 6, 17, 18, 30, 0, 0, time.UTC)      // 19:30 +01:00
	saturday := time.Date(2026, 6, 20, 10, 0, 0, 0, time.UTC)   // Saturday
	after2027 := time.Date(2028, 1, 5, 10, 0, 0, 0, time.UTC)   // past DateLessThan
	earlyEdge := time.Date(2026, 6, 17, 6, 0, 0, 0, time.UTC)   // 07:00 +01:00, window start
	lateEdge := time.Date(2026, 6, 17, 17, 59, 59, 0, time.UTC) // 18:59 +01:00

	tests := []struct {
		name     string
		policies []*Policy
		req      Request
		allow    bool
		line     int // line of the deciding statement; 0 for none
		reason   string
	}{
		{"own namespace decrypt", []*Policy{ns}, Request{Principal: podA, Action: "kms:Decrypt", Resource: "alias/app-web", Context: ctxA}, true, 5, ReasonAllowed},
		{"other namespace decrypt", []*Policy{ns}, Request{Principal: podA, Action: "kms:Decrypt", Resource: "alias/app-web", Context: ctxB}, false, 0, ReasonDefaultDeny},
		{"other pod own namespace", []*Policy{ns}, Request{Principal: podB, Action: "kms:Decrypt", Resource: "alias/app-web", Context: ctxB}, true, 5, ReasonAllowed},
		{"no context", []*Policy{ns}, Request{Principal: podA, Action: "kms:Decrypt", Resource: "alias/app-web"}, false, 0, ReasonDefaultDeny},
		{"principal without namespace, empty context value", []*Policy{ns}, Request{Principal: noNSRole, Action: "kms:Decrypt", Resource: "alias/app-web", Context: map[string]string{"namespace": ""}}, false, 0, ReasonDefaultDeny},
		{"action not granted", []*Policy{ns}, Request{Principal: podA, Action: "kms:ReEncrypt", Resource: "alias/app-web", Context: ctxA}, false, 0, ReasonDefaultDeny},
		{"resource not granted", []*Policy{ns}, Request{Principal: podA, Action: "kms:Decrypt", Resource: "alias/db", Context: ctxA}, false, 0, ReasonDefaultDeny},
		{"alias via Aliases", []*Policy{ns}, Request{Principal: podA, Action: "kms:Decrypt", Resource: keyID, Aliases: []string{"alias/x", "alias/app-web"}, Context: ctxA}, true, 5, ReasonAllowed},
		{"deny wins over allow", []*Policy{ns}, Request{Principal: podA, Action: "kms:Decrypt", Resource: "alias/app-root", Context: ctxA}, false, 12, ReasonExplicitDeny},
		{"deny wins via alias", []*Policy{ns}, Request{Principal: podA, Action: "kms:Decrypt", Resource: keyID, Aliases: []string{"alias/app-root"}, Context: ctxA}, false, 12, ReasonExplicitDeny},
		{"unknown action", []*Policy{ns}, Request{Principal: podA, Action: "kms:Frobnicate", Resource: "alias/app-web", Context: ctxA}, false, 0, ReasonUnknownAction},
		{"no policies", nil, Request{Principal: podA, Action: "kms:Decrypt", Resource: "alias/app-web", Context: ctxA}, false, 0, ReasonDefaultDeny},

		{"ci in window and range", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: ciIP, Time: fixedNow}, true, 4, ReasonAllowed},
		{"ci by key id", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: keyID, SourceIP: ciIP, Time: fixedNow}, true, 4, ReasonAllowed},
		{"ci ipv6", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: ciIP6, Time: fixedNow}, true, 4, ReasonAllowed},
		{"ci ipv4-mapped", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: mapped, Time: fixedNow}, true, 4, ReasonAllowed},
		{"ci outside range", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: otherIP, Time: fixedNow}, false, 0, ReasonDefaultDeny},
		{"ci unknown source", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", Time: fixedNow}, false, 0, ReasonDefaultDeny},
		{"ci after hours", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: ciIP, Time: late}, false, 0, ReasonDefaultDeny},
		{"ci window start inclusive", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: ciIP, Time: earlyEdge}, true, 4, ReasonAllowed},
		{"ci last minute of window", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: ciIP, Time: lateEdge}, true, 4, ReasonAllowed},
		{"ci on saturday", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: ciIP, Time: saturday}, false, 0, ReasonDefaultDeny},
		{"ci after expiry", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: ciIP, Time: after2027}, false, 0, ReasonDefaultDeny},
		{"ci no time", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Encrypt", Resource: "alias/ci-build", SourceIP: ciIP}, false, 0, ReasonDefaultDeny},
		{"ci decrypt not granted", []*Policy{ci}, Request{Principal: ciKey, Action: "kms:Decrypt", Resource: "alias/ci-build", SourceIP: ciIP, Time: fixedNow}, false, 0, ReasonDefaultDeny},
		{"list without resource", []*Policy{ci}, Request{Principal: ciKey, Action: "key:List"}, true, 19, ReasonAllowed},

		{"admin rotates", []*Policy{admin}, Request{Principal: payRole, Action: "key:Rotate", Resource: keyID}, true, 4, ReasonAllowed},
		{"admin may not decrypt", []*Policy{admin}, Request{Principal: payRole, Action: "kms:Decrypt", Resource: keyID}, false, 8, ReasonExplicitDeny},
		{"admin may not seal", []*Policy{admin}, Request{Principal: payRole, Action: "sys:Seal"}, false, 12, ReasonExplicitDeny},
		{"admin may not encrypt (default)", []*Policy{admin}, Request{Principal: payRole, Action: "kms:Encrypt", Resource: keyID}, false, 0, ReasonDefaultDeny},
		{"deny in another policy wins", []*Policy{ns, admin}, Request{Principal: podA, Action: "kms:Decrypt", Resource: "alias/app-web", Context: ctxA}, false, 8, ReasonExplicitDeny},
		{"first allow in order decides", []*Policy{ci, admin}, Request{Principal: ciKey, Action: "key:Describe", Resource: keyID}, true, 19, ReasonAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Evaluate(tc.policies, tc.req)
			if d.Allowed != tc.allow || d.Reason != tc.reason {
				t.Fatalf("got %v (%s), want allowed=%v reason %q", d.Allowed, d, tc.allow, tc.reason)
			}
			line := 0
			if d.Statement != nil {
				line = d.Statement.Line
			}
			if line != tc.line {
				t.Fatalf("decided by line %d, want %d (%s)", line, tc.line, d)
			}
		})
	}
}

func TestTemplating(t *testing.T) {
	p := mustParse(t, "t.yaml", `statements:
  - effect: allow
    actions: [kms:Decrypt, secret:Read]
    resources:
      - alias/${principal.namespace}-*
      - secret/${principal.namespace}/${principal.service_account}/*
      - secret/teams/${principal.attr.cluster}/*
    conditions:
      StringEquals:
        context.namespace: ${principal.namespace}
        context.who: ${principal.namespace}/${principal.service_account}
      StringLike:
        context.path: "/${principal.namespace}/*"
`)
	ctx := func(ns, who, path string) map[string]string {
		return map[string]string{"namespace": ns, "who": who, "path": path}
	}
	for _, tc := range []struct {
		name  string
		p     Principal
		act   string
		res   string
		ctx   map[string]string
		allow bool
	}{
		{"all match", podA, "kms:Decrypt", "alias/team-a-db", ctx("team-a", "team-a/web", "/team-a/x"), true},
		{"alias of other namespace", podA, "kms:Decrypt", "alias/team-b-db", ctx("team-a", "team-a/web", "/team-a/x"), false},
		{"who mismatch", podA, "kms:Decrypt", "alias/team-a-db", ctx("team-a", "team-a/api", "/team-a/x"), false},
		{"path like mismatch", podA, "kms:Decrypt", "alias/team-a-db", ctx("team-a", "team-a/web", "/team-b/x"), false},
		{"other pod", podB, "kms:Decrypt", "alias/team-b-db", ctx("team-b", "team-b/web", "/team-b/"), true},
		{"secret path", podA, "secret:Read", "secret/team-a/web/db-password", ctx("team-a", "team-a/web", "/team-a/x"), true},
		{"secret of other sa", podA, "secret:Read", "secret/team-a/api/db-password", ctx("team-a", "team-a/web", "/team-a/x"), false},
		{"attribute", podA, "secret:Read", "secret/teams/prod/x", ctx("team-a", "team-a/web", "/team-a/x"), true},
		{"missing attribute matches nothing", podB, "secret:Read", "secret/teams//x", ctx("team-b", "team-b/web", "/team-b/x"), false},
		{"no namespace matches nothing", noNSRole, "kms:Decrypt", "alias/-db", ctx("", "/", "//x"), false},
	} {
		d := Evaluate([]*Policy{p}, Request{Principal: tc.p, Action: tc.act, Resource: tc.res, Context: tc.ctx})
		if d.Allowed != tc.allow {
			t.Errorf("%s: %s", tc.name, d)
		}
	}
}

func TestStringNotEqualsAndNotIP(t *testing.T) {
	p := mustParse(t, "n.yaml", `statements:
  - sid: Allow
    effect: allow
    actions: kms:*
    resources: "*"
  - sid: OnlyOwnNamespace
    effect: deny
    actions: kms:Decrypt
    resources: "*"
    conditions:
      StringNotEquals:
        context.namespace: ${principal.namespace}
  - sid: OnlyFromCluster
    effect: deny
    actions: kms:*
    resources: "*"
    conditions:
      NotIpAddress:
        source_ip: [10.0.0.0/8, 192.168.1.1]
`)
	in := netip.MustParseAddr("10.1.1.1")
	host := netip.MustParseAddr("192.168.1.1")
	for _, tc := range []struct {
		name  string
		req   Request
		allow bool
		sid   string
	}{
		{"own namespace", Request{Principal: podA, Action: "kms:Decrypt", Context: map[string]string{"namespace": "team-a"}, SourceIP: in}, true, "Allow"},
		{"other namespace", Request{Principal: podA, Action: "kms:Decrypt", Context: map[string]string{"namespace": "team-b"}, SourceIP: in}, false, "OnlyOwnNamespace"},
		{"context missing: denied", Request{Principal: podA, Action: "kms:Decrypt", SourceIP: in}, false, "OnlyOwnNamespace"},
		{"no namespace principal: denied", Request{Principal: noNSRole, Action: "kms:Decrypt", Context: map[string]string{"namespace": ""}, SourceIP: in}, false, "OnlyOwnNamespace"},
		{"encrypt any context", Request{Principal: podA, Action: "kms:Encrypt", SourceIP: in}, true, "Allow"},
		{"single host", Request{Principal: podA, Action: "kms:Encrypt", SourceIP: host}, true, "Allow"},
		{"outside", Request{Principal: podA, Action: "kms:Encrypt", SourceIP: netip.MustParseAddr("192.168.1.2")}, false, "OnlyFromCluster"},
		{"unknown source: denied", Request{Principal: podA, Action: "kms:Encrypt"}, false, "OnlyFromCluster"},
	} {
		d := Evaluate([]*Policy{p}, tc.req)
		if d.Allowed != tc.allow || d.Statement == nil || d.Statement.Sid != tc.sid {
			t.Errorf("%s: %s", tc.name, d)
		}
	}
}

func TestTimeWindows(t *testing.T) {
	p := mustParse(t, "w.yaml", `statements:
  - sid: Night
    effect: allow
    actions: kms:Encrypt
    resources: "*"
    conditions:
      TimeOfDay: {between: "22:00-06:00", zone: UTC, days: [Fri]}
  - sid: Q3
    effect: allow
    actions: kms:Decrypt
    resources: "*"
    conditions:
      DateGreaterThan: {time: "2026-07-01T00:00:00Z"}
      DateLessThan: {time: "2026-10-01T00:00:00+02:00"}
`)
	at := func(s string) time.Time {
		t.Helper()
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tc := range []struct {
		action, when string
		allow        bool
	}{
		{"kms:Encrypt", "2026-06-19T23:00:00Z", true},  // Friday night
		{"kms:Encrypt", "2026-06-20T05:59:00Z", true},  // Saturday morning: Friday's window
		{"kms:Encrypt", "2026-06-20T06:00:00Z", false}, // window ends
		{"kms:Encrypt", "2026-06-19T05:00:00Z", false}, // Friday morning: Thursday's window
		{"kms:Encrypt", "2026-06-19T21:59:59Z", false},
		{"kms:Encrypt", "2026-06-20T00:00:00+02:00", true}, // = Fri 22:00 UTC
		{"kms:Decrypt", "2026-07-01T00:00:00Z", false},     // strictly greater
		{"kms:Decrypt", "2026-07-01T00:00:01Z", true},
		{"kms:Decrypt", "2026-09-30T21:59:59Z", true},
		{"kms:Decrypt", "2026-09-30T22:00:00Z", false}, // = the bound in +02:00
	} {
		d := Evaluate([]*Policy{p}, Request{Principal: podA, Action: tc.action, Time: at(tc.when)})
		if d.Allowed != tc.allow {
			t.Errorf("%s at %s: %s", tc.action, tc.when, d)
		}
	}
}

func TestGlobs(t *testing.T) {
	p := &Principal{Namespace: "ns", ID: "me"}
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "anything/at/all", true},
		{"alias/app", "alias/app", true},
		{"alias/app", "alias/app2", false},
		{"alias/app", "alias/ap", false},
		{"alias/app-*", "alias/app-", true},
		{"alias/app-*", "alias/app-x/y", true},
		{"alias/app-*", "alias/app", false},
		{"*-prod", "alias/a-prod", true},
		{"*-prod", "alias/a-prod2", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"a*b*b", "ab", false},
		{"a*b*b", "abb", true},
		{"alias/*/x", "alias//x", true},
		{"secret/${principal.namespace}/*", "secret/ns/a", true},
		{"secret/${principal.namespace}/*", "secret/ns2/a", false},
		{"secret/${principal.namespace}", "secret/ns", true},
		{"secret/${principal.namespace}", "secret/nsx", false},
		{"*${principal.namespace}*", "xxnsxx", true},
		{"*${principal.namespace}*", "xxnxsx", false},
		{"*/${principal.id}", "a/b/me", true},
		{"*/${principal.role}", "a/b/", false}, // empty value matches nothing
		{"a*${principal.namespace}-${principal.id}*z", "a.ns-me.z", true},
		{"a*${principal.namespace}-${principal.id}*z", "a.ns-you.z", false},
	} {
		g, err := compileGlob(tc.pattern, true)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if got := g.match(tc.s, p); got != tc.want {
			t.Errorf("%q match %q = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
	for _, bad := range []string{"", "a**", "a?", "a[b]", "{a,b}", "$x", "${", "${principal.nope}", "${context.x}", "a\nb"} {
		if _, err := compileGlob(bad, true); err == nil {
			t.Errorf("%q compiled", bad)
		}
	}
	if _, err := compileGlob("alias/${principal.id}", false); err == nil {
		t.Error("template accepted where templates are not allowed")
	}
}

func TestPrincipalsAndKeyPolicy(t *testing.T) {
	identity := NewSet(mustParse(t, "id.yaml", `statements:
  - sid: UseKeys
    effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: "*"
`))
	kp := NewSet(mustParseFile(t, "testdata/good/key-policy.yaml"))
	denyKP := NewSet(mustParse(t, "deny-kp.yaml", `statements:
  - sid: NoCI
    effect: deny
    principals: ["access-key:*"]
    actions: "kms:*"
    resources: "*"
  - sid: Rest
    effect: allow
    actions: "kms:*"
    resources: "*"
`))
	pay := map[string]string{"app": "payments"}
	for _, tc := range []struct {
		name          string
		identity, key *Set
		req           Request
		allow         bool
		reason        string
	}{
		{"no key policy", identity, nil, Request{Principal: podA, Action: "kms:Encrypt"}, true, ReasonAllowed},
		{"key policy names role", identity, kp, Request{Principal: payRole, Action: "kms:Encrypt", Context: pay}, true, ReasonAllowed},
		{"key policy: other role", identity, kp, Request{Principal: podA, Action: "kms:Encrypt", Context: pay}, false, ReasonKeyPolicy},
		{"key policy: condition", identity, kp, Request{Principal: payRole, Action: "kms:Encrypt"}, false, ReasonKeyPolicy},
		{"key policy: access key", identity, kp, Request{Principal: Principal{Kind: "access-key", ID: "cfak_x"}, Action: "kms:Decrypt", Context: pay}, true, ReasonAllowed},
		{"key policy alone grants nothing", nil, kp, Request{Principal: payRole, Action: "kms:Encrypt", Context: pay}, false, ReasonDefaultDeny},
		{"empty identity set", NewSet(), kp, Request{Principal: payRole, Action: "kms:Encrypt", Context: pay}, false, ReasonDefaultDeny},
		{"key policy deny wins", identity, denyKP, Request{Principal: ciKey, Action: "kms:Encrypt"}, false, ReasonExplicitDeny},
		{"key policy deny for others only", identity, denyKP, Request{Principal: podA, Action: "kms:Encrypt"}, true, ReasonAllowed},
		{"unknown action", identity, kp, Request{Principal: payRole, Action: "nope"}, false, ReasonUnknownAction},
	} {
		d := Authorize(tc.identity, tc.key, tc.req)
		if d.Allowed != tc.allow || d.Reason != tc.reason {
			t.Errorf("%s: %s", tc.name, d)
		}
		if d.Allowed && tc.key != nil && d.KeyStatement == nil {
			t.Errorf("%s: no key statement", tc.name)
		}
	}
}

func TestDecisionString(t *testing.T) {
	p := mustParseFile(t, "testdata/good/admin.yaml")
	d := Evaluate([]*Policy{p}, Request{Action: "sys:Seal"})
	if got, want := d.String(), "deny: explicitly denied by testdata/good/admin.yaml:12 statement 3 (NoSeal)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	d = Evaluate(nil, Request{Action: "sys:Seal"})
	if got, want := d.String(), "deny: no statement allows it (default deny)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestEvaluateAllocatesNothing: the request path is allocation-free.
func TestEvaluateAllocatesNothing(t *testing.T) {
	set := NewSet(mustParseFile(t, "testdata/good/namespace-decrypt.yaml"), mustParseFile(t, "testdata/good/ci-office-hours.yaml"))
	req := Request{Principal: podA, Action: "kms:Decrypt", Resource: "3f1c2a9e-0d4b-4c8e-9a51-7b2d6e8f0a13",
		Aliases: []string{"alias/app-web"}, Context: map[string]string{"namespace": "team-a"},
		SourceIP: netip.MustParseAddr("10.20.0.1"), Time: fixedNow}
	if n := testing.AllocsPerRun(100, func() {
		if !set.Evaluate(req).Allowed {
			t.Fatal("denied")
		}
	}); n != 0 {
		t.Errorf("%v allocations per Evaluate", n)
	}
}

func TestCatalogue(t *testing.T) {
	for _, a := range []string{"kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt", "kms:ReEncryptTo", "kms:GenerateDataKey",
		"kms:GenerateDataKeyWithoutPlaintext", "kms:GenerateRandom", "key:Create", "key:List", "key:Describe", "key:Update",
		"key:Enable", "key:Disable", "key:Rotate", "key:ScheduleDeletion", "key:CancelDeletion", "key:CreateAlias",
		"key:ListAliases", "key:DeleteAlias", "token:Create", "token:LookupSelf", "token:Revoke", "token:RevokeSelf",
		"sys:Seal", "sys:Init", "sys:Unseal", "sys:SealStatus", "secret:Read", "audit:Read", "audit:Hash",
		"audit:PublicKey", "policy:Write", "auth:AssumeRole"} {
		if _, ok := LookupAction(a); !ok {
			t.Errorf("%s missing from the catalogue", a)
		}
	}
	if len(catalogue) > len(actionSet{})*64 {
		t.Fatal("catalogue outgrew actionSet")
	}
}
