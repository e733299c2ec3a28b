package secretsync

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubescheme "k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/cofferkms/coffer/client"
)

// fakeCoffer is an in-memory Coffer: identities are "ns/sa/role", a
// service-account token is "sa:ns/sa" (minted by the fake clientset's
// reactor), and allow decides which identity reads which secret.
type fakeCoffer struct {
	mu      sync.Mutex
	secrets map[string][]map[string]string // name -> versions, version i+1 at i
	tokens  map[string]string              // role token -> identity
	allow   func(ident, name string) bool
	// listAllow, when set, decides the waits (secret:List) apart from
	// the reads.
	listAllow func(ident, name string) bool
	changed   chan struct{} // closed on every put
	n         int

	gets, logins, waits atomic.Int64
}

func newFakeCoffer() *fakeCoffer {
	return &fakeCoffer{secrets: map[string][]map[string]string{}, tokens: map[string]string{}, changed: make(chan struct{}),
		allow: func(string, string) bool { return true }}
}

func (f *fakeCoffer) put(name string, fields map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets[name] = append(f.secrets[name], fields)
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCoffer) Login(_ context.Context, role, jwt string) (string, time.Time, error) {
	f.logins.Add(1)
	sa, ok := strings.CutPrefix(jwt, "sa:")
	if !ok {
		return "", time.Time{}, &client.APIError{StatusCode: http.StatusUnauthorized, Message: "bad token"}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	tok := fmt.Sprintf("role-token-%d", f.n)
	f.tokens[tok] = sa + "/" + role
	return tok, time.Now().Add(time.Hour), nil
}

func (f *fakeCoffer) Revoke(_ context.Context, tok string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tokens, tok)
	return nil
}

func (f *fakeCoffer) liveTokens() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.tokens)
}

func (f *fakeCoffer) ident(tok string) (string, error) {
	id, ok := f.tokens[tok]
	if !ok {
		return "", &client.APIError{StatusCode: http.StatusUnauthorized, Message: "unknown token"}
	}
	return id, nil
}

func (f *fakeCoffer) SecretGet(_ context.Context, tok, name string) (*client.SecretValue, error) {
	f.gets.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	id, err := f.ident(tok)
	if err != nil {
		return nil, err
	}
	if !f.allow(id, name) {
		return nil, &client.APIError{StatusCode: http.StatusForbidden, Message: "not allowed: secret:Read on secret/" + name}
	}
	vs := f.secrets[name]
	if len(vs) == 0 {
		return nil, &client.APIError{StatusCode: http.StatusNotFound, Message: "secret " + name + " not found"}
	}
	return &client.SecretValue{Name: name, Version: uint32(len(vs)), Fields: vs[len(vs)-1]}, nil
}

func (f *fakeCoffer) SecretWait(ctx context.Context, tok string, known map[string]uint32, wait time.Duration) (*WaitResult, error) {
	f.waits.Add(1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		id, err := f.ident(tok)
		if err != nil {
			f.mu.Unlock()
			return nil, err
		}
		res := &WaitResult{}
		listAllow := f.allow
		if f.listAllow != nil {
			listAllow = f.listAllow
		}
		for name, v := range known {
			if !listAllow(id, name) {
				res.Denied = append(res.Denied, name)
				continue
			}
			if cur := uint32(len(f.secrets[name])); cur != v {
				res.Changed = append(res.Changed, Change{Name: name, CurrentVersion: cur})
			}
		}
		ch := f.changed
		f.mu.Unlock()
		if len(res.Changed) > 0 || len(res.Denied) > 0 {
			return res, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return &WaitResult{}, nil
		case <-ch:
		}
	}
}

type env struct {
	t      *testing.T
	dyn    *dynamicfake.FakeDynamicClient
	coffer *fakeCoffer
	cfg    Config
	logs   *strings.Builder
}

func newEnv(t *testing.T, objs ...runtime.Object) *env {
	t.Helper()
	// The controller's only client is the dynamic one; the scheme
	// knows the core types so that tests may seed typed objects.
	sch := runtime.NewScheme()
	if err := kubescheme.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	sch.AddKnownTypeWithName(GVR.GroupVersion().WithKind(Kind), &unstructured.Unstructured{})
	sch.AddKnownTypeWithName(GVR.GroupVersion().WithKind(Kind+"List"), &unstructured.UnstructuredList{})
	dyn := dynamicfake.NewSimpleDynamicClient(sch, objs...)
	// The fake applies a strategic merge patch only to typed objects; the
	// restart's patch (one annotation) means the same as a merge patch.
	for _, r := range []string{"deployments", "statefulsets"} {
		dyn.PrependReactor("patch", r, func(a k8stesting.Action) (bool, runtime.Object, error) {
			pa, ok := a.(k8stesting.PatchActionImpl)
			if !ok || pa.PatchType != types.StrategicMergePatchType {
				return false, nil, nil
			}
			pa.PatchType = types.MergePatchType
			return k8stesting.ObjectReaction(dyn.Tracker())(pa)
		})
	}
	dyn.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca, ok := a.(k8stesting.CreateActionImpl)
		if !ok || a.GetSubresource() != "token" {
			return false, nil, nil
		}
		var tr authv1.TokenRequest
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(ca.GetObject().(*unstructured.Unstructured).Object, &tr); err != nil {
			return true, nil, err
		}
		if len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != "coffer" {
			return true, nil, fmt.Errorf("unexpected audiences %v", tr.Spec.Audiences)
		}
		if tr.Name != ca.Name {
			return true, nil, fmt.Errorf("TokenRequest named %q for service account %q", tr.Name, ca.Name)
		}
		tr.Status.Token = "sa:" + a.GetNamespace() + "/" + ca.Name
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&tr)
		if err != nil {
			return true, nil, err
		}
		return true, &unstructured.Unstructured{Object: m}, nil
	})
	logs := &strings.Builder{}
	e := &env{t: t, dyn: dyn, coffer: newFakeCoffer(), logs: logs}
	e.cfg = Config{Dynamic: e.dyn, Coffer: e.coffer, Role: "sync", LeaseNamespace: "coffer-system", LeaseName: "coffer-sync",
		Identity: "test-1", MinRetry: 20 * time.Millisecond, MaxRetry: 200 * time.Millisecond, Wait: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: logs}, nil))}
	return e
}

// secrets is the fake cluster's Secrets of ns, typed.
func (e *env) secrets(ns string) secretAPI {
	return secretAPI{e.dyn.Resource(secretsGVR).Namespace(ns)}
}

// deployment reads a Deployment of the fake cluster.
func (e *env) deployment(ns, name string) (*appsv1.Deployment, error) {
	u, err := e.dyn.Resource(appsv1.SchemeGroupVersion.WithResource("deployments")).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	d := &appsv1.Deployment{}
	return d, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d)
}

// lease reads the controller's Lease of the fake cluster.
func (e *env) lease() (*coordinationv1.Lease, error) {
	u, err := e.dyn.Resource(leaseGVR).Namespace("coffer-system").Get(context.Background(), "coffer-sync", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	l := &coordinationv1.Lease{}
	return l, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, l)
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// start runs the controller until the test ends.
func (e *env) start() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			e.t.Error("Run did not return after its context ended")
		}
	})
}

var uidN atomic.Int64

// create makes a CofferSecret in ns with spec.
func (e *env) create(ns, name string, spec map[string]any) *unstructured.Unstructured {
	e.t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/" + Version, "kind": Kind,
		"metadata": map[string]any{"name": name, "namespace": ns, "uid": fmt.Sprintf("uid-%d", uidN.Add(1)), "generation": int64(1)},
		"spec":     spec,
	}}
	out, err := e.dyn.Resource(GVR).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s\ncontroller log:\n%s", what, e.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle waits until the sync's own echoes (the status update's event, the
// Secret reaching the informer's cache) are over: no Coffer read for
// 300 ms.
func (e *env) settle() {
	e.t.Helper()
	last, quiet := e.coffer.gets.Load(), time.Now()
	e.eventually("the controller to settle", func() bool {
		if n := e.coffer.gets.Load(); n != last {
			last, quiet = n, time.Now()
		}
		return time.Since(quiet) > 300*time.Millisecond
	})
}

func (e *env) secret(ns, name string) *corev1.Secret {
	s, err := e.secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) status(ns, name string) Status {
	u, err := e.dyn.Resource(GVR).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	cs, err := fromUnstructured(u)
	if err != nil {
		e.t.Fatal(err)
	}
	return cs.Status
}

// waitReason waits for the Ready condition's reason and returns it.
func (e *env) waitReason(ns, name, reason string) Condition {
	e.t.Helper()
	var got Condition
	e.eventually("CofferSecret "+ns+"/"+name+" reason "+reason, func() bool {
		if st := e.status(ns, name); st.ready() != nil {
			r := st.ready()
			got = *r
			return r.Reason == reason
		}
		return false
	})
	return got
}

func (e *env) secretWrites(ns string) int {
	n := 0
	for _, a := range e.dyn.Actions() {
		if a.GetResource().Resource == "secrets" && a.GetNamespace() == ns && (a.GetVerb() == "create" || a.GetVerb() == "update" || a.GetVerb() == "patch") {
			n++
		}
	}
	return n
}

func deployment(ns, name string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}}}}}
}

func restartedAt(t *testing.T, e *env, ns, name string) string {
	d, err := e.deployment(ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Annotations[AnnotationRestartedAt]
}

// TestSyncCreateUpdateRestart: a CofferSecret's Secret appears with the
// secret's fields, labels, annotations and a controller owner reference;
// the status says Synced at version 1; the Deployment is not restarted by
// the first sync. A new version in Coffer reaches the Secret through the
// long-poll (the informers' resync is 10 minutes) and restarts the
// Deployment exactly once.
func TestSyncCreateUpdateRestart(t *testing.T) {
	e := newEnv(t, deployment("app", "web"))
	e.coffer.put("app/db", map[string]string{"password": "pw-1", "user": "app"})
	e.start()
	cr := e.create("app", "db", map[string]any{"secret": "app/db", "rolloutRestart": []any{map[string]any{"kind": "Deployment", "name": "web"}}})

	e.eventually("the Secret", func() bool { return e.secret("app", "db") != nil })
	s := e.secret("app", "db")
	if string(s.Data["password"]) != "pw-1" || string(s.Data["user"]) != "app" || len(s.Data) != 2 {
		t.Fatalf("data %v", s.Data)
	}
	if s.Type != corev1.SecretTypeOpaque || s.Labels[LabelManagedBy] != ManagedBy || s.Annotations[AnnotationSecret] != "app/db" ||
		s.Annotations[AnnotationVersion] != "1" || s.Annotations[AnnotationOwnerUID] != string(cr.GetUID()) || s.Annotations[AnnotationOwner] != "app/db" {
		t.Fatalf("Secret metadata: type %s labels %v annotations %v", s.Type, s.Labels, s.Annotations)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != cr.GetUID() || !isTrue(s.OwnerReferences[0].Controller) || s.OwnerReferences[0].Kind != Kind {
		t.Fatalf("owner references %+v", s.OwnerReferences)
	}
	c := e.waitReason("app", "db", ReasonSynced)
	if c.Status != "True" {
		t.Fatalf("Ready %+v", c)
	}
	e.eventually("syncedVersion 1", func() bool { return e.status("app", "db").SyncedVersion == 1 })
	if st := e.status("app", "db"); st.LastSyncTime == "" || st.ObservedGeneration != 1 {
		t.Fatalf("status %+v", st)
	}
	if r := restartedAt(t, e, "app", "web"); r != "" {
		t.Fatalf("the first sync restarted the Deployment (%s)", r)
	}

	e.coffer.put("app/db", map[string]string{"password": "pw-2", "user": "app"})
	e.eventually("version 2 in the Secret", func() bool {
		s := e.secret("app", "db")
		return string(s.Data["password"]) == "pw-2" && s.Annotations[AnnotationVersion] == "2"
	})
	e.eventually("the Deployment's restart", func() bool { return restartedAt(t, e, "app", "web") != "" })
	e.eventually("syncedVersion 2", func() bool { return e.status("app", "db").SyncedVersion == 2 })
	if _, err := time.Parse(time.RFC3339, restartedAt(t, e, "app", "web")); err != nil {
		t.Fatalf("restartedAt: %v", err)
	}
	if strings.Contains(e.logs.String(), "pw-") || strings.Contains(e.logs.String(), "role-token") || strings.Contains(e.logs.String(), "sa:app") {
		t.Fatalf("the log holds a value or a token:\n%s", e.logs.String())
	}
}

// TestSyncNoRereadWhenUnchanged: once synced, the status update's own
// event and the long-poll's quiet returns read nothing more from Coffer
// and write nothing to the Secret.
func TestSyncNoRereadWhenUnchanged(t *testing.T) {
	e := newEnv(t)
	e.coffer.put("app/db", map[string]string{"password": "pw-1"})
	e.cfg.Wait = 100 * time.Millisecond
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db"})
	e.waitReason("app", "db", ReasonSynced)
	e.settle()
	gets, writes := e.coffer.gets.Load(), e.secretWrites("app")
	time.Sleep(600 * time.Millisecond)
	if g, w := e.coffer.gets.Load(), e.secretWrites("app"); g != gets || w != writes {
		t.Fatalf("after the sync: %d more reads, %d more Secret writes; want none", g-gets, w-writes)
	}
	if w := e.coffer.waits.Load(); w < 3 {
		t.Fatalf("%d long-polls, want the loop to keep polling", w)
	}
	if e.coffer.logins.Load() != 1 {
		t.Fatalf("%d logins, want 1: the role token is cached", e.coffer.logins.Load())
	}
}

// TestApplySecretUnchangedWritesNothing: applying the same data twice
// writes once.
func TestApplySecretUnchangedWritesNothing(t *testing.T) {
	e := newEnv(t)
	c := newController(e.cfg)
	cs := &CofferSecret{}
	cs.Metadata.Name, cs.Metadata.Namespace, cs.Metadata.UID = "db", "app", "uid-x"
	spec := Spec{Secret: "app/db"}
	spec.defaults("db", "sync")
	data := map[string][]byte{"password": []byte("pw")}
	ctx := context.Background()
	if _, wrote, err := c.applySecret(ctx, cs, &spec, 1, data); err != nil || !wrote {
		t.Fatalf("first apply: wrote=%v err=%v", wrote, err)
	}
	// Without a cache: the create finds the Secret, which is read and
	// found equal.
	updates := func() int {
		n := 0
		for _, a := range e.dyn.Actions() {
			if a.GetResource().Resource == "secrets" && (a.GetVerb() == "update" || a.GetVerb() == "patch" || a.GetVerb() == "delete") {
				n++
			}
		}
		return n
	}
	if _, wrote, err := c.applySecret(ctx, cs, &spec, 1, map[string][]byte{"password": []byte("pw")}); err != nil || wrote || updates() != 0 {
		t.Fatalf("second apply: wrote=%v err=%v updates=%d, want no write", wrote, err, updates())
	}
	// With the informer's cache: no request at all.
	c.secrets = newSecretInformer(e.dyn, "", 0)
	stop := make(chan struct{})
	defer close(stop)
	go c.secrets.Run(stop)
	cache.WaitForCacheSync(stop, c.secrets.HasSynced)
	e.eventually("the cached Secret", func() bool { return c.cachedSecret("app", "db") != nil })
	before := len(e.dyn.Actions())
	if _, wrote, err := c.applySecret(ctx, cs, &spec, 1, map[string][]byte{"password": []byte("pw")}); err != nil || wrote {
		t.Fatalf("cached apply: wrote=%v err=%v, want no write", wrote, err)
	}
	if n := len(e.dyn.Actions()) - before; n != 0 {
		t.Fatalf("%d requests for unchanged data", n)
	}
	// A drifted value or a new version is written.
	if _, wrote, err := c.applySecret(ctx, cs, &spec, 1, map[string][]byte{"password": []byte("other")}); err != nil || !wrote {
		t.Fatalf("changed data: wrote=%v err=%v", wrote, err)
	}
	if _, wrote, err := c.applySecret(ctx, cs, &spec, 2, map[string][]byte{"password": []byte("other")}); err != nil || !wrote {
		t.Fatalf("new version, same data: wrote=%v err=%v", wrote, err)
	}
	if s := e.secret("app", "db"); s.Annotations[AnnotationVersion] != "2" {
		t.Fatalf("version annotation %q", s.Annotations[AnnotationVersion])
	}
	// A new type (immutable in a real apiserver) replaces the Secret.
	spec.Target.Type = string(corev1.SecretTypeBasicAuth)
	if _, wrote, err := c.applySecret(ctx, cs, &spec, 2, map[string][]byte{"password": []byte("other")}); err != nil || !wrote {
		t.Fatalf("new type: wrote=%v err=%v", wrote, err)
	}
	if s := e.secret("app", "db"); s.Type != corev1.SecretTypeBasicAuth || string(s.Data["password"]) != "other" {
		t.Fatalf("after a type change: type %s", s.Type)
	}
}

// TestSyncConflict: a Secret of the target name that this CofferSecret did
// not write is never overwritten; the status says Conflict.
func TestSyncConflict(t *testing.T) {
	mine := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db"}, Data: map[string][]byte{"k": []byte("theirs")}}
	// Managed by coffer-sync, but for another CofferSecret.
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db2", Labels: map[string]string{LabelManagedBy: ManagedBy},
		Annotations: map[string]string{AnnotationOwnerUID: "someone-else"}}, Data: map[string][]byte{"k": []byte("theirs")}}
	e := newEnv(t, mine, other)
	e.coffer.put("app/db", map[string]string{"password": "pw-1"})
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db"})
	e.create("app", "db2", map[string]any{"secret": "app/db"})
	for _, n := range []string{"db", "db2"} {
		c := e.waitReason("app", n, ReasonConflict)
		if c.Status != "False" || !strings.Contains(c.Message, "Secret "+n) {
			t.Fatalf("%s: condition %+v", n, c)
		}
		s := e.secret("app", n)
		if string(s.Data["k"]) != "theirs" || len(s.Data) != 1 || len(s.OwnerReferences) != 0 {
			t.Fatalf("%s: the unmanaged Secret was changed: %v %v", n, s.Data, s.OwnerReferences)
		}
	}
}

// TestSyncForbidden: a secret the namespace's identity may not read gives
// Ready=False reason Forbidden and no Secret; the message holds no token;
// the other namespace's CofferSecret of the same name still syncs.
func TestSyncForbidden(t *testing.T) {
	e := newEnv(t)
	e.coffer.allow = func(ident, name string) bool {
		ns, _, _ := strings.Cut(ident, "/")
		return strings.HasPrefix(name, ns+"/")
	}
	e.coffer.put("team-a/db", map[string]string{"password": "pw-a"})
	e.start()
	e.create("team-b", "steal", map[string]any{"secret": "team-a/db"})
	e.create("team-a", "db", map[string]any{"secret": "team-a/db"})
	c := e.waitReason("team-b", "steal", ReasonForbidden)
	if c.Status != "False" || !strings.Contains(c.Message, `"team-a/db"`) || strings.Contains(c.Message, "role-token") || strings.Contains(c.Message, "sa:") {
		t.Fatalf("condition %+v", c)
	}
	if e.secret("team-b", "steal") != nil {
		t.Fatal("a Secret was written for a forbidden secret")
	}
	e.waitReason("team-a", "db", ReasonSynced)
	// Each namespace logged in as its own default service account.
	var sas []string
	for _, a := range e.dyn.Actions() {
		if a.GetSubresource() == "token" {
			sas = append(sas, a.GetNamespace()+"/"+a.(k8stesting.CreateActionImpl).Name)
		}
	}
	if !containsAll(sas, "team-a/default", "team-b/default") {
		t.Fatalf("token requests %v", sas)
	}
	// Allowed later: the denial's backoff re-checks it.
	e.coffer.mu.Lock()
	e.coffer.allow = func(string, string) bool { return true }
	e.coffer.mu.Unlock()
	e.waitReason("team-b", "steal", ReasonSynced)
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// TestSyncDeletionPolicy: Delete gives the Secret a controller owner
// reference to the CofferSecret (the garbage collector removes it with
// the resource); Retain gives none.
func TestSyncDeletionPolicy(t *testing.T) {
	e := newEnv(t)
	e.coffer.put("app/db", map[string]string{"password": "pw"})
	e.start()
	del := e.create("app", "del", map[string]any{"secret": "app/db", "target": map[string]any{"deletionPolicy": "Delete"}})
	e.create("app", "keep", map[string]any{"secret": "app/db", "target": map[string]any{"deletionPolicy": "Retain", "name": "kept", "type": "kubernetes.io/basic-auth"}})
	e.eventually("both Secrets", func() bool { return e.secret("app", "del") != nil && e.secret("app", "kept") != nil })
	if refs := e.secret("app", "del").OwnerReferences; len(refs) != 1 || refs[0].UID != del.GetUID() || !isTrue(refs[0].Controller) {
		t.Fatalf("Delete: owner references %+v", refs)
	}
	kept := e.secret("app", "kept")
	if len(kept.OwnerReferences) != 0 {
		t.Fatalf("Retain: owner references %+v", kept.OwnerReferences)
	}
	if kept.Type != corev1.SecretTypeBasicAuth {
		t.Fatalf("type %s", kept.Type)
	}
}

// TestSyncDataMapping: spec.data picks and renames fields; an invalid key,
// a field that is not a valid key without mapping, and a missing field are
// conditions and write no Secret.
func TestSyncDataMapping(t *testing.T) {
	e := newEnv(t)
	e.coffer.put("app/db", map[string]string{"password": "pw", "user": "u", "extra": "x"})
	e.coffer.put("app/odd", map[string]string{"my field": "v"})
	e.start()
	e.create("app", "mapped", map[string]any{"secret": "app/db", "data": []any{
		map[string]any{"key": "DB_PASSWORD", "field": "password"}, map[string]any{"field": "user"}}})
	e.create("app", "badkey", map[string]any{"secret": "app/db", "data": []any{map[string]any{"key": "bad key!", "field": "password"}}})
	e.create("app", "dupkey", map[string]any{"secret": "app/db", "data": []any{map[string]any{"key": "k", "field": "password"}, map[string]any{"key": "k", "field": "user"}}})
	e.create("app", "odd", map[string]any{"secret": "app/odd"})
	e.create("app", "missing", map[string]any{"secret": "app/db", "data": []any{map[string]any{"field": "nope"}}})

	e.eventually("the mapped Secret", func() bool { return e.secret("app", "mapped") != nil })
	if d := e.secret("app", "mapped").Data; len(d) != 2 || string(d["DB_PASSWORD"]) != "pw" || string(d["user"]) != "u" {
		t.Fatalf("mapped data %v", d)
	}
	for name, want := range map[string]string{"badkey": "bad key!", "dupkey": "given twice", "odd": "my field"} {
		c := e.waitReason("app", name, ReasonInvalidSpec)
		if !strings.Contains(c.Message, want) {
			t.Errorf("%s: message %q, want it to mention %q", name, c.Message, want)
		}
	}
	if c := e.waitReason("app", "missing", ReasonNotFound); !strings.Contains(c.Message, `"nope"`) {
		t.Errorf("missing field: %q", c.Message)
	}
	for _, n := range []string{"badkey", "dupkey", "odd", "missing"} {
		if e.secret("app", n) != nil {
			t.Errorf("%s: a Secret was written", n)
		}
	}
}

// TestSyncRecreatesDeletedSecret: a managed Secret deleted or edited by
// hand is written again from Coffer.
func TestSyncRecreatesDeletedSecret(t *testing.T) {
	e := newEnv(t)
	e.coffer.put("app/db", map[string]string{"password": "pw"})
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db"})
	e.eventually("the Secret", func() bool { return e.secret("app", "db") != nil })
	e.waitReason("app", "db", ReasonSynced)
	if err := e.secrets("app").Delete(context.Background(), "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the re-created Secret", func() bool { s := e.secret("app", "db"); return s != nil && string(s.Data["password"]) == "pw" })

	s := e.secret("app", "db")
	s.Data["password"] = []byte("tampered")
	if _, err := e.secrets("app").Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the drifted Secret restored", func() bool { return string(e.secret("app", "db").Data["password"]) == "pw" })
}

// TestSyncNotFoundThenCreated: a CofferSecret naming a secret that does
// not exist yet says NotFound, and syncs when the secret is created (the
// long-poll holds version 0 for it).
func TestSyncNotFoundThenCreated(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxRetry = 10 * time.Minute // no quick retry: the long-poll must bring it
	e.cfg.MinRetry = 5 * time.Minute
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/later"})
	e.waitReason("app", "db", ReasonNotFound)
	e.coffer.put("app/later", map[string]string{"k": "v"})
	e.waitReason("app", "db", ReasonSynced)
}

// TestSpecValidate covers the spec checks the apiserver's schema also
// makes, for resources written before the schema or with it bypassed.
func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{}, "spec.secret is required"},
		{Spec{Secret: "/x"}, "not a Coffer secret name"},
		{Spec{Secret: "x", Target: Target{Name: "Bad_Name"}}, "spec.target.name"},
		{Spec{Secret: "x", ServiceAccountName: "Bad_SA"}, "spec.serviceAccountName"},
		{Spec{Secret: "x", Target: Target{DeletionPolicy: "Orphan"}}, "deletionPolicy"},
		{Spec{Secret: "x", Target: Target{Type: "kubernetes.io/service-account-token"}}, "cannot be written"},
		{Spec{Secret: "x", Data: []DataItem{{Key: "a"}}}, "field is required"},
		{Spec{Secret: "x", RolloutRestart: []RolloutTarget{{Kind: "DaemonSet", Name: "a"}}}, "Deployment or StatefulSet"},
		{Spec{Secret: "x", RolloutRestart: []RolloutTarget{{Kind: "Deployment", Name: "a"}, {Kind: "Deployment", Name: "a"}}}, "given twice"},
	} {
		s := tc.spec
		s.defaults("n", "role")
		err := s.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.spec, err, tc.want)
		}
	}
	s := Spec{Secret: "x"}
	s.defaults("n", "")
	if err := s.validate(); err == nil || !strings.Contains(err.Error(), "--role") {
		t.Errorf("no role: %v", err)
	}
	s = Spec{Secret: "app/x", Data: []DataItem{{Field: "f"}}, RolloutRestart: []RolloutTarget{{Kind: "StatefulSet", Name: "db"}}}
	s.defaults("n", "role")
	if err := s.validate(); err != nil {
		t.Errorf("valid spec: %v", err)
	}
	if s.Data[0].Key != "f" || s.Target.Name != "n" || s.ServiceAccountName != "default" || s.Target.Type != "Opaque" || s.Target.DeletionPolicy != DeletionDelete {
		t.Errorf("defaults %+v", s)
	}
}

// TestSyncResyncReadsNothing: the informers' resync (here every second,
// the shared informers' minimum) queues every resource again, but an up-to-date one is not read from
// Coffer again, and its Secret is not written.
func TestSyncResyncReadsNothing(t *testing.T) {
	e := newEnv(t)
	e.coffer.put("app/db", map[string]string{"password": "pw-1"})
	e.cfg.Resync = 50 * time.Millisecond
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db"})
	e.waitReason("app", "db", ReasonSynced)
	e.settle()
	gets, writes := e.coffer.gets.Load(), e.secretWrites("app")
	time.Sleep(2500 * time.Millisecond)
	if g, w := e.coffer.gets.Load(), e.secretWrites("app"); g != gets || w != writes {
		t.Fatalf("resyncs of an up-to-date resource: %d reads, %d Secret writes; want none", g-gets, w-writes)
	}
}

// TestSyncDeniedLeavesTheWait: a name the identity may not watch is not
// sent again at once (it would make every wait return at once): it waits
// for its backoff.
func TestSyncDeniedLeavesTheWait(t *testing.T) {
	e := newEnv(t)
	e.coffer.allow = func(string, string) bool { return false }
	e.coffer.put("app/db", map[string]string{"password": "pw"})
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db"})
	e.waitReason("app", "db", ReasonForbidden)
	before := e.coffer.waits.Load()
	time.Sleep(time.Second)
	// The denial's backoff starts at 5 x MinRetry (100 ms) and is capped
	// at MaxRetry (200 ms): about 6 waits a second, not thousands.
	if n := e.coffer.waits.Load() - before; n > 15 {
		t.Fatalf("%d waits in a second for a denied name", n)
	}
}

// TestSyncFollowerWritesNothing: while another replica holds the Lease,
// the controller reads and writes nothing; it takes over when the lease
// expires.
func TestSyncFollowerWritesNothing(t *testing.T) {
	holder, dur := "other", int32(2)
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "coffer-system", Name: "coffer-sync"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now}}
	e := newEnv(t, lease)
	e.cfg.LeaseDuration, e.cfg.RenewDeadline, e.cfg.RetryPeriod = 2*time.Second, time.Second, 100*time.Millisecond
	e.coffer.put("app/db", map[string]string{"password": "pw"})
	e.create("app", "db", map[string]any{"secret": "app/db"})
	e.start()
	time.Sleep(time.Second)
	if e.secret("app", "db") != nil || e.coffer.gets.Load() != 0 || e.coffer.logins.Load() != 0 {
		t.Fatalf("a follower synced (reads %d, logins %d)", e.coffer.gets.Load(), e.coffer.logins.Load())
	}
	e.eventually("the take-over after the lease expired", func() bool { return e.secret("app", "db") != nil })
	l, err := e.lease()
	if err != nil || *l.Spec.HolderIdentity != "test-1" {
		t.Fatalf("lease holder %v %v", l.Spec.HolderIdentity, err)
	}
}

// recordingCoffer records the size of each wait.
type recordingCoffer struct {
	*fakeCoffer
	mu    sync.Mutex
	sizes []int
}

func (r *recordingCoffer) SecretWait(ctx context.Context, tok string, known map[string]uint32, wait time.Duration) (*WaitResult, error) {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(known))
	r.mu.Unlock()
	if _, ok := known["n-2400"]; ok {
		return &WaitResult{Changed: []Change{{Name: "n-2400", CurrentVersion: 7}}}, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestWaitChunks: a group of 2500 names waits in requests of at most
// MaxWaitNames; the first answer ends the others and is applied.
func TestWaitChunks(t *testing.T) {
	e := newEnv(t)
	rc := &recordingCoffer{fakeCoffer: e.coffer}
	e.cfg.Coffer = rc
	if err := e.cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	c := newController(e.cfg)
	c.ctx = context.Background()
	g := &group{names: map[string]map[string]bool{}, known: map[string]uint32{}, denied: map[string]denial{}, kick: make(chan struct{}, 1)}
	known := map[string]uint32{}
	for i := range 2500 {
		n := fmt.Sprintf("n-%d", i)
		known[n] = 1
		g.names[n] = map[string]bool{"app/cr-" + n: true}
	}
	res, err := c.waitOnce(context.Background(), g, "tok", known)
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	sizes := append([]int(nil), rc.sizes...)
	rc.mu.Unlock()
	total := 0
	for _, s := range sizes {
		if s > MaxWaitNames {
			t.Fatalf("a wait of %d names", s)
		}
		total += s
	}
	if len(sizes) != 3 || total != 2500 {
		t.Fatalf("wait sizes %v", sizes)
	}
	if len(res.Changed) != 1 || res.Changed[0].Name != "n-2400" {
		t.Fatalf("result %+v", res)
	}
	c.apply(g, res)
	if g.known["n-2400"] != 7 || c.queue.Len() != 1 {
		t.Fatalf("after apply: known %d, queued %d", g.known["n-2400"], c.queue.Len())
	}
}

// TestSyncDeletedResourceStopsWatching: once its last CofferSecret is
// deleted, a group's long-poll stops; a Retain Secret stays.
func TestSyncDeletedResourceStopsWatching(t *testing.T) {
	e := newEnv(t)
	e.cfg.Wait = 50 * time.Millisecond
	e.coffer.put("app/db", map[string]string{"password": "pw"})
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db", "target": map[string]any{"deletionPolicy": "Retain"}})
	e.waitReason("app", "db", ReasonSynced)
	if err := e.dyn.Resource(GVR).Namespace("app").Delete(context.Background(), "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	before := e.coffer.waits.Load()
	time.Sleep(500 * time.Millisecond)
	if n := e.coffer.waits.Load() - before; n != 0 {
		t.Fatalf("%d waits after the last CofferSecret of the group was deleted", n)
	}
	if e.secret("app", "db") == nil {
		t.Fatal("the Retain Secret was deleted")
	}
	e.eventually("the group's role token revoked", func() bool { return e.coffer.liveTokens() == 0 })
}

// TestSyncRevokedTokenLogsInAgain: when Coffer refuses the group's role
// token (revoked, expired), the controller logs in again with a fresh
// service-account token and new versions keep coming.
func TestSyncRevokedTokenLogsInAgain(t *testing.T) {
	e := newEnv(t)
	e.cfg.Wait = 200 * time.Millisecond
	e.coffer.put("app/db", map[string]string{"password": "pw-1"})
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db"})
	e.waitReason("app", "db", ReasonSynced)
	logins := e.coffer.logins.Load()
	e.coffer.mu.Lock()
	clear(e.coffer.tokens) // every role token revoked
	e.coffer.mu.Unlock()
	e.coffer.put("app/db", map[string]string{"password": "pw-2"})
	e.eventually("version 2 after the revocation", func() bool { return string(e.secret("app", "db").Data["password"]) == "pw-2" })
	if e.coffer.logins.Load() <= logins {
		t.Fatal("no new login after the token was refused")
	}
}

// TestRunWithoutCRD: without the CRD, Run fails at once and says what to
// install.
func TestRunWithoutCRD(t *testing.T) {
	e := newEnv(t)
	e.dyn.PrependReactor("list", Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: Group, Resource: Resource}, "")
	})
	err := Run(context.Background(), e.cfg)
	if err == nil || !strings.Contains(err.Error(), "deploy/coffer-sync/crd.yaml") {
		t.Fatalf("Run without the CRD: %v", err)
	}
	if _, err := e.lease(); !apierrors.IsNotFound(err) {
		t.Fatalf("a Lease was taken without the CRD: %v", err)
	}
}

// TestSyncReadableButNotListable: a secret the identity may read but not
// list (the long-poll denies it) syncs, and the status says new versions
// are not watched; once listing is allowed the note goes.
func TestSyncReadableButNotListable(t *testing.T) {
	e := newEnv(t)
	e.coffer.listAllow = func(string, string) bool { return false }
	e.coffer.put("app/db", map[string]string{"password": "pw"})
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db"})
	e.eventually("the not-watched note", func() bool {
		st := e.status("app", "db")
		r := st.ready()
		return r != nil && r.Reason == ReasonSynced && strings.Contains(r.Message, "secret:List")
	})
	e.coffer.mu.Lock()
	e.coffer.listAllow = nil
	e.coffer.mu.Unlock()
	e.eventually("the note gone", func() bool {
		st := e.status("app", "db")
		r := st.ready()
		return r != nil && r.Reason == ReasonSynced && !strings.Contains(r.Message, "secret:List")
	})
	// Watched again: a new version comes through the long-poll.
	e.coffer.put("app/db", map[string]string{"password": "pw-2"})
	e.eventually("version 2", func() bool { return string(e.secret("app", "db").Data["password"]) == "pw-2" })
}

// TestSyncSecretWriteRefused: a Secret write the apiserver refuses (here
// the controller's RBAC) is an Error condition naming the cause, retried.
func TestSyncSecretWriteRefused(t *testing.T) {
	e := newEnv(t)
	var refuse atomic.Bool
	refuse.Store(true)
	e.dyn.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if refuse.Load() {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "db", fmt.Errorf("RBAC says no"))
		}
		return false, nil, nil
	})
	e.coffer.put("app/db", map[string]string{"password": "pw"})
	e.start()
	e.create("app", "db", map[string]any{"secret": "app/db"})
	c := e.waitReason("app", "db", ReasonError)
	if c.Status != "False" || !strings.Contains(c.Message, "RBAC says no") || strings.Contains(c.Message, "pw") {
		t.Fatalf("condition %+v", c)
	}
	refuse.Store(false)
	e.waitReason("app", "db", ReasonSynced)
}
