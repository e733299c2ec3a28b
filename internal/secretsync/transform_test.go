package secretsync

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
