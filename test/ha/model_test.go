package ha

import (
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability check, as etcd's robustness tests do it: every client
// operation is recorded with its call and return times and the history of
// each object is checked against a sequential model with porcupine. An
// operation whose outcome is unknown (a transport error, a timeout, a 5xx)
// is recorded as pending: its return time is infinity and the model lets it
// take effect at any point after its call, or never (linearized last).
// Reads with an unknown outcome constrain nothing and are not recorded.
//
// Replicas answer reads of keys, aliases, policies and tokens from caches
// kept coherent through etcd watches, which the design bounds by the
// freshness bound rather than making them linearizable. A read therefore
// gets a window: its call time is moved back by the bound ("stale"), so the
// check is "every read returns a value the object had at some point
// between bound before its call and its return, and writes are
// linearizable". A stale value older than the bound, a lost or doubled
// rotation, an alias seen moving backwards or a revoked token accepted
// after the bound all fail it.

// Operation kinds.
const (
	opCreateKey   = "create-key"   // out.N: version
	opRotate      = "rotate"       // out.N: new primary version
	opDescribe    = "describe"     // out.N: primary version (read)
	opAliasCreate = "alias-create" // arg: key id; out.OK: created, else "exists"
	opAliasDelete = "alias-delete" // out.OK: deleted, else "not found"
	opResolve     = "resolve"      // out.S: key id, "" for none (read)
	// An alias write a replica refuses ("exists", "not found") is decided
	// on that replica's cache, so it is checked as a read.
	opAliasCreateNo = "alias-create-exists"   // (read)
	opAliasDeleteNo = "alias-delete-notfound" // (read)
	opPolicyPut     = "policy-put"            // arg: "allow" or "deny"
	opEvaluate      = "evaluate"              // out.OK: allowed (read)
	opTokenCreate   = "token-create"          // a token issued
	opRevoke        = "revoke"                // revoke a token
	opRevokeNone    = "revoke-none"           // a revocation answered "no such token" (read)
	opUse           = "use"                   // out.OK: accepted (read)
)

// linInput is what a client asked, on which object.
type linInput struct {
	Obj     string
	Kind    string
	Arg     string
	Replica int
}

// linOutput is what it was told. Unknown: no answer that says.
type linOutput struct {
	Unknown bool
	OK      bool
	N       int
	S       string
}

// linState is one object's state: N a key's primary version or a token's
// life (0 not issued, 1 valid, 2 revoked), S an alias's key id, B a
// policy's allow.
type linState struct {
	N int
	S string
	B bool
}

func isRead(kind string) bool {
	switch kind {
	case opDescribe, opResolve, opEvaluate, opUse, opRevokeNone, opAliasCreateNo, opAliasDeleteNo:
		return true
	}
	return false
}

// linStep is the sequential specification of every object kind.
func linStep(state, input, output any) (bool, any) {
	s, in, out := state.(linState), input.(linInput), output.(linOutput)
	switch in.Kind {
	case opCreateKey:
		return out.Unknown || out.N == 1, linState{N: 1}
	case opRotate:
		return out.Unknown || out.N == s.N+1, linState{N: s.N + 1}
	case opDescribe:
		return out.N == s.N, s
	case opAliasCreate:
		switch {
		case out.Unknown:
			if s.S == "" {
				return true, linState{S: in.Arg}
			}
			return true, s
		case out.OK:
			return s.S == "", linState{S: in.Arg}
		default:
			return s.S != "", s
		}
	case opAliasDelete:
		switch {
		case out.Unknown:
			return true, linState{}
		case out.OK:
			return s.S != "", linState{}
		default:
			return s.S == "", s
		}
	case opAliasCreateNo:
		return s.S != "", s
	case opAliasDeleteNo:
		return s.S == "", s
	case opResolve:
		return out.S == s.S, s
	case opPolicyPut:
		return true, linState{B: in.Arg == "allow"}
	case opEvaluate:
		return out.OK == s.B, s
	case opTokenCreate:
		return true, linState{N: 1}
	case opRevoke:
		return true, linState{N: 2}
	case opRevokeNone:
		return s.N == 0, s
	case opUse:
		return out.OK == (s.N == 1), s
	}
	return false, s
}

// linModel partitions the history by object.
var linModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var objs []string
		for _, op := range history {
			o := op.Input.(linInput).Obj
			if _, ok := by[o]; !ok {
				objs = append(objs, o)
			}
			by[o] = append(by[o], op)
		}
		sort.Strings(objs)
		out := make([][]porcupine.Operation, 0, len(objs))
		for _, o := range objs {
			out = append(out, by[o])
		}
		return out
	},
	Init: func() any { return linState{} },
	Step: linStep,
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		res := ""
		switch {
		case out.Unknown:
			res = "?"
		case in.Kind == opCreateKey || in.Kind == opRotate || in.Kind == opDescribe:
			res = fmt.Sprint(out.N)
		case in.Kind == opResolve:
			res = fmt.Sprintf("%q", out.S)
		default:
			res = fmt.Sprint(out.OK)
		}
		return fmt.Sprintf("r%d %s %s(%s) -> %s", in.Replica, in.Obj, in.Kind, in.Arg, res)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%+v", state.(linState)) },
}

// history records client operations. Times are nanoseconds since start.
type history struct {
	mu    sync.Mutex
	start time.Time
	stale time.Duration // window given to reads
	ops   []porcupine.Operation
	// counts per kind, for the report
	counts map[string]int
}

func newHistory(stale time.Duration) *history {
	return &history{start: time.Now(), stale: stale, counts: map[string]int{}}
}

// now is the current history time.
func (h *history) now() int64 { return int64(time.Since(h.start)) }

// add records one operation called at call and answered at ret with out;
// an unknown outcome makes a write pending and drops a read.
func (h *history) add(client int, in linInput, call int64, out linOutput, ret int64) {
	if out.Unknown {
		if isRead(in.Kind) {
			return
		}
		ret = math.MaxInt64
	}
	if isRead(in.Kind) {
		call -= int64(h.stale)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[in.Kind]++
	if out.Unknown {
		h.counts[in.Kind+" (pending)"]++
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// keepPending keeps the n earliest-called pending operations of kind on
// obj and drops the other pending ones (as never applied). Callers use it
// when they know how many took effect.
func (h *history) keepPending(obj, kind string, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var pending []int
	for i, op := range h.ops {
		in := op.Input.(linInput)
		if in.Obj == obj && in.Kind == kind && op.Output.(linOutput).Unknown {
			pending = append(pending, i)
		}
	}
	sort.SliceStable(pending, func(a, b int) bool { return h.ops[pending[a]].Call < h.ops[pending[b]].Call })
	if n < 0 {
		n = 0
	}
	if n >= len(pending) {
		return
	}
	drop := map[int]bool{}
	for _, i := range pending[n:] {
		drop[i] = true
	}
	kept := h.ops[:0]
	for i, op := range h.ops {
		if !drop[i] {
			kept = append(kept, op)
		}
	}
	h.ops = kept
	h.counts[kind+" (pending, dropped as not applied)"] += len(drop)
}

// summary lists the recorded counts.
func (h *history) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(h.counts)) {
		fmt.Fprintf(&b, "%s=%d ", k, h.counts[k])
	}
	return strings.TrimSpace(b.String())
}

// check runs porcupine on the history; on a violation (or a check that
// could not finish) it writes the visualisation and fails t with its path.
func (h *history) check(t testing.TB, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	began := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, ops, timeout)
	t.Logf("linearizability: %d operations (%s), stale window for reads %s: %s in %s",
		len(ops), h.summary(), h.stale, res, time.Since(began).Round(time.Millisecond))
	if res != porcupine.Ok {
		// Name the objects whose own history fails (each alone is small).
		var bad []string
		for _, part := range linModel.Partition(ops) {
			if r := porcupine.CheckOperationsTimeout(linModel, part, 10*time.Second); r != porcupine.Ok {
				bad = append(bad, fmt.Sprintf("%s (%d ops): %s", part[0].Input.(linInput).Obj, len(part), r))
			}
		}
		t.Errorf("objects whose history is not shown linearizable (Unknown: not decided in 10s): %v", bad)
		path := artifactPath(t, "linearizability.html")
		if err := porcupine.VisualizePath(linModel, info, path); err != nil {
			t.Errorf("writing the visualisation: %v", err)
		}
		t.Errorf("history is %s; visualisation: %s", res, path)
	}
	return res
}

// artifactPath is a file in the test's artifact directory.
func artifactPath(t testing.TB, name string) string {
	return filepath.Join(artifactDir(t), name)
}

var artifactDirs sync.Map // test name -> directory

// artifactDir is $COFFER_HA_ARTIFACTS/TESTNAME, or a new directory under
// the system temp dir that outlives the test (t.TempDir would not).
func artifactDir(t testing.TB) string {
	name := strings.ReplaceAll(t.Name(), "/", "_")
	if d, ok := artifactDirs.Load(name); ok {
		return d.(string)
	}
	var dir string
	if root := os.Getenv("COFFER_HA_ARTIFACTS"); root != "" {
		dir = filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		d, err := os.MkdirTemp("", "coffer-ha-"+name+"-")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
	}
	d, _ := artifactDirs.LoadOrStore(name, dir)
	return d.(string)
}
