package ha

import (
	"math"
	"os"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The checker must be able to fail: each case is a small history that one
// rule of the model decides, accepted or rejected.
func TestLinearizabilityModel(t *testing.T) {
	type op struct {
		call, ret int64 // ret < 0: pending
		in        linInput
		out       linOutput
	}
	k := func(kind string, arg ...string) linInput {
		in := linInput{Obj: "o", Kind: kind}
		if len(arg) > 0 {
			in.Arg = arg[0]
		}
		return in
	}
	n := func(v int) linOutput { return linOutput{N: v} }
	ok := linOutput{OK: true}
	no := linOutput{}
	unknown := linOutput{Unknown: true}
	s := func(v string) linOutput { return linOutput{S: v} }
	cases := []struct {
		name  string
		stale int64
		ops   []op
		want  bool
	}{
		{"rotations in order", 0, []op{{0, 1, k(opCreateKey), n(1)}, {2, 3, k(opRotate), n(2)}, {4, 5, k(opRotate), n(3)}, {6, 7, k(opDescribe), n(3)}}, true},
		{"concurrent rotations either order", 0, []op{{0, 1, k(opCreateKey), n(1)}, {2, 10, k(opRotate), n(3)}, {3, 9, k(opRotate), n(2)}}, true},
		{"two rotations one version", 0, []op{{0, 1, k(opCreateKey), n(1)}, {2, 10, k(opRotate), n(2)}, {3, 9, k(opRotate), n(2)}}, false},
		{"a version skipped", 0, []op{{0, 1, k(opCreateKey), n(1)}, {2, 3, k(opRotate), n(3)}}, false},
		{"describe after rotate sees it", 0, []op{{0, 1, k(opCreateKey), n(1)}, {2, 3, k(opRotate), n(2)}, {4, 5, k(opDescribe), n(1)}}, false},
		{"stale describe within the window", 10, []op{{0, 1, k(opCreateKey), n(1)}, {2, 3, k(opRotate), n(2)}, {4, 5, k(opDescribe), n(1)}}, true},
		{"stale describe beyond the window", 10, []op{{0, 1, k(opCreateKey), n(1)}, {2, 3, k(opRotate), n(2)}, {20, 21, k(opDescribe), n(1)}}, false},
		{"pending rotation applied", 0, []op{{0, 1, k(opCreateKey), n(1)}, {2, -1, k(opRotate), unknown}, {4, 5, k(opDescribe), n(2)}}, true},
		{"pending rotation not applied", 0, []op{{0, 1, k(opCreateKey), n(1)}, {2, -1, k(opRotate), unknown}, {4, 5, k(opDescribe), n(1)}}, true},
		{"pending rotation applied twice", 0, []op{{0, 1, k(opCreateKey), n(1)}, {2, -1, k(opRotate), unknown}, {4, 5, k(opDescribe), n(3)}}, false},
		{"alias move", 0, []op{{0, 1, k(opAliasCreate, "a"), ok}, {2, 3, k(opAliasDelete), ok}, {4, 5, k(opAliasCreate, "b"), ok}, {6, 7, k(opResolve), s("b")}}, true},
		{"alias created twice", 0, []op{{0, 1, k(opAliasCreate, "a"), ok}, {2, 3, k(opAliasCreate, "b"), ok}}, false},
		{"alias exists when none", 0, []op{{0, 1, k(opAliasCreate, "a"), no}}, false},
		{"alias refused as existing when none", 0, []op{{0, 1, k(opAliasCreateNo), no}}, false},
		{"alias refused as existing within the window", 10, []op{{0, 1, k(opAliasCreate, "a"), ok}, {2, 3, k(opAliasDelete), ok}, {4, 5, k(opAliasCreateNo), no}}, true},
		{"alias refused as existing beyond the window", 10, []op{{0, 1, k(opAliasCreate, "a"), ok}, {2, 3, k(opAliasDelete), ok}, {20, 21, k(opAliasCreateNo), no}}, false},
		{"alias delete refused as missing when there", 0, []op{{0, 1, k(opAliasCreate, "a"), ok}, {2, 3, k(opAliasDeleteNo), no}}, false},
		{"alias resolved back", 0, []op{{0, 1, k(opAliasCreate, "a"), ok}, {2, 3, k(opAliasDelete), ok}, {4, 5, k(opAliasCreate, "b"), ok}, {6, 7, k(opResolve), s("a")}}, false},
		{"deleted alias deleted again", 0, []op{{0, 1, k(opAliasCreate, "a"), ok}, {2, 3, k(opAliasDelete), ok}, {4, 5, k(opAliasDelete), ok}}, false},
		{"policy deny then allowed", 0, []op{{0, 1, k(opPolicyPut, "allow"), ok}, {2, 3, k(opPolicyPut, "deny"), ok}, {4, 5, k(opEvaluate), ok}}, false},
		{"policy allow then allowed", 0, []op{{0, 1, k(opPolicyPut, "deny"), ok}, {2, 3, k(opPolicyPut, "allow"), ok}, {4, 5, k(opEvaluate), ok}}, true},
		{"token used after revoke", 0, []op{{0, 0, k(opTokenCreate), ok}, {0, 1, k(opUse), ok}, {2, 3, k(opRevoke), ok}, {4, 5, k(opUse), ok}}, false},
		{"token used during revoke", 0, []op{{0, 0, k(opTokenCreate), ok}, {0, 1, k(opUse), ok}, {2, 6, k(opRevoke), ok}, {4, 5, k(opUse), ok}}, true},
		{"token refused before revoke", 0, []op{{0, 0, k(opTokenCreate), ok}, {1, 2, k(opUse), no}, {3, 4, k(opRevoke), ok}}, false},
		{"token used before issued", 0, []op{{0, 1, k(opUse), ok}, {2, 3, k(opTokenCreate), ok}}, false},
		{"new token unknown within the window", 10, []op{{0, 1, k(opTokenCreate), ok}, {2, 3, k(opUse), no}}, true},
		{"revoke finds no token after it was issued", 0, []op{{0, 1, k(opTokenCreate), ok}, {2, 3, k(opRevokeNone), no}}, false},
		{"revoke finds no token within the window", 10, []op{{0, 1, k(opTokenCreate), ok}, {2, 3, k(opRevokeNone), no}}, true},
		{"token used within the window", 10, []op{{0, 0, k(opTokenCreate), ok}, {2, 3, k(opRevoke), ok}, {8, 9, k(opUse), ok}}, true},
		{"token used beyond the window", 10, []op{{0, 0, k(opTokenCreate), ok}, {2, 3, k(opRevoke), ok}, {18, 19, k(opUse), ok}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ops []porcupine.Operation
			for i, o := range c.ops {
				call, ret := o.call, o.ret
				if ret < 0 {
					ret = math.MaxInt64
				}
				if isRead(o.in.Kind) {
					call -= c.stale
				}
				ops = append(ops, porcupine.Operation{ClientId: i, Input: o.in, Call: call, Output: o.out, Return: ret})
			}
			if got := porcupine.CheckOperations(linModel, ops); got != c.want {
				t.Fatalf("linearizable = %v, want %v", got, c.want)
			}
		})
	}
}

// A violation recorded through history fails the check and writes the
// visualisation, whose path the failure names.
func TestLinearizabilityViolationReported(t *testing.T) {
	h := newHistory(0)
	in := func(kind string) linInput { return linInput{Obj: "key:k", Kind: kind} }
	h.add(0, in(opCreateKey), 0, linOutput{N: 1}, 1)
	h.add(0, in(opRotate), 2, linOutput{N: 2}, 3)
	h.add(1, in(opRotate), 4, linOutput{N: 2}, 5) // a second rotation, same version
	h.add(1, in(opDescribe), 6, linOutput{Unknown: true}, 7)
	dir := t.TempDir()
	t.Setenv("COFFER_HA_ARTIFACTS", dir)
	ft := &fakeT{TB: t}
	if res := h.check(ft, 10*time.Second); res != porcupine.Illegal {
		t.Fatalf("check = %s, want Illegal", res)
	}
	if !ft.failed {
		t.Fatal("the check did not fail the test")
	}
	path := artifactPath(t, "linearizability.html")
	st, err := os.Stat(path)
	if err != nil || st.Size() == 0 {
		t.Fatalf("no visualisation at %s: %v", path, err)
	}
	if h.summary() != "create-key=1 rotate=2" {
		t.Fatalf("summary %q: the unknown read should not be recorded", h.summary())
	}
}

// fakeT records a failure instead of failing the real test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Fatalf(string, ...any) { f.failed = true }
func (f *fakeT) Helper()               {}

// keepPending keeps the earliest pending operations: with as many kept as
// took effect the history checks, with fewer it does not.
func TestLinearizabilityKeepPending(t *testing.T) {
	build := func() *history {
		h := newHistory(0)
		in := func(kind string) linInput { return linInput{Obj: "key:k", Kind: kind} }
		h.add(0, in(opCreateKey), 0, linOutput{N: 1}, 1)
		h.add(1, in(opRotate), 2, linOutput{Unknown: true}, 3)
		h.add(2, in(opRotate), 4, linOutput{Unknown: true}, 5)
		h.add(3, in(opRotate), 30, linOutput{Unknown: true}, 31)
		h.add(0, in(opDescribe), 10, linOutput{N: 3}, 11)
		return h
	}
	ops := func(h *history) []porcupine.Operation { return h.ops }
	h := build()
	h.keepPending("key:k", opRotate, 2)
	if len(h.ops) != 4 || !porcupine.CheckOperations(linModel, ops(h)) {
		t.Fatalf("two earliest pending rotations kept: %d ops, want 4 and linearizable", len(h.ops))
	}
	h = build()
	h.keepPending("key:k", opRotate, 1)
	if porcupine.CheckOperations(linModel, ops(h)) {
		t.Fatal("one pending rotation kept cannot explain version 3")
	}
}
