package secretsync

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

// TestStripManagedFields: the informers' transform drops managedFields of
// typed Secrets and of unstructured CofferSecrets, and nothing else.
func TestStripManagedFields(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", ManagedFields: mf, Labels: map[string]string{LabelManagedBy: ManagedBy}},
		Data: map[string][]byte{"k": []byte("v")}}
	out, err := stripManagedFields(s)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Secret)
	if len(got.ManagedFields) != 0 || got.Name != "db" || string(got.Data["k"]) != "v" || got.Labels[LabelManagedBy] != ManagedBy {
		t.Fatalf("Secret after the transform: %+v", got)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": Group + "/" + Version, "kind": Kind,
		"metadata": map[string]any{"name": "db", "managedFields": []any{map[string]any{"manager": "kubectl"}}},
		"spec":     map[string]any{"secret": "app/db"}}}
	out, err = stripManagedFields(u)
	if err != nil {
		t.Fatal(err)
	}
	gu := out.(*unstructured.Unstructured)
	if len(gu.GetManagedFields()) != 0 || gu.GetName() != "db" || gu.Object["spec"].(map[string]any)["secret"] != "app/db" {
		t.Fatalf("CofferSecret after the transform: %v", gu.Object)
	}
}

// TestStatusOnly: an update that changed only the status (a new
// resourceVersion, nothing else) is not queued; a resync and every change
// the reconcile reads are.
func TestStatusOnly(t *testing.T) {
	obj := func(rv string, gen int64, mutate func(u *unstructured.Unstructured)) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": Group + "/" + Version, "kind": Kind,
			"metadata": map[string]any{"name": "db", "namespace": "app", "resourceVersion": rv, "generation": gen,
				"labels": map[string]any{"a": "1"}, "annotations": map[string]any{"b": "2"}},
			"spec": map[string]any{"secret": "app/db"}, "status": map[string]any{"syncedVersion": int64(1)}}}
		if mutate != nil {
			mutate(u)
		}
		return u
	}
	base := obj("1", 1, nil)
	if !statusOnly(base, obj("2", 1, func(u *unstructured.Unstructured) { u.Object["status"] = map[string]any{"syncedVersion": int64(2)} })) {
		t.Fatal("a status-only update was queued")
	}
	for name, cur := range map[string]*unstructured.Unstructured{
		"resync":      obj("1", 1, nil),
		"generation":  obj("2", 2, nil),
		"labels":      obj("2", 1, func(u *unstructured.Unstructured) { u.SetLabels(map[string]string{"a": "2"}) }),
		"annotations": obj("2", 1, func(u *unstructured.Unstructured) { u.SetAnnotations(nil) }),
		"deletion":    obj("2", 1, func(u *unstructured.Unstructured) { now := metav1.Now(); u.SetDeletionTimestamp(&now) }),
		"owners": obj("2", 1, func(u *unstructured.Unstructured) {
			u.SetOwnerReferences([]metav1.OwnerReference{{UID: "x", Kind: "K", Name: "n", APIVersion: "v1"}})
		}),
	} {
		if statusOnly(base, cur) {
			t.Errorf("%s: not queued", name)
		}
	}
}

// TestCheckElection: timings under which two replicas could lead at once
// are refused; the defaults and client-go's usual ones pass.
func TestCheckElection(t *testing.T) {
	s := time.Second
	for _, ok := range [][3]time.Duration{{15 * s, 10 * s, 2 * s}, {60 * s, 40 * s, 5 * s}} {
		if err := checkElection(ok[0], ok[1], ok[2]); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][3]time.Duration{
		{500 * time.Millisecond, 300 * time.Millisecond, 100 * time.Millisecond}, // under a second: stored as 0
		{15*s + 500*time.Millisecond, 10 * s, 2 * s},                             // fraction dropped when stored
		{15 * s, 14 * s, 2 * s},                                                  // renew+retry past the lease
		{15 * s, 13 * s, 2 * s},                                                  // renew+retry equal to the lease
		{15 * s, 2 * s, 2 * s},                                                   // renew not above retry
		{15 * s, 10 * s, 0},
	} {
		if err := checkElection(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	c := Config{Dynamic: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()), Coffer: newFakeCoffer(), LeaseNamespace: "ns", LeaseName: "l", Identity: "i",
		LeaseDuration: 5 * time.Second, RenewDeadline: 4 * time.Second, RetryPeriod: 2 * time.Second}
	if err := c.defaults(); err == nil {
		t.Fatal("Config.defaults accepted renew+retry past the lease")
	}
}
