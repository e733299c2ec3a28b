package policy

import (
	"slices"
	"testing"
)

// TestReviewSelfUpdateByAnyGlob: every resource glob that can match the
// caller's own access key id (cf*, c*, cfak_AB*, ...) gets self-update, not
// only *, cfak_* and ${principal.id}. (Other globs went unflagged.)
func TestReviewSelfUpdateByAnyGlob(t *testing.T) {
	for _, res := range []string{"cf*", "c*", "cfak_AB*", "*_*", "cfak_*X"} {
		p := mustParse(t, "l.yaml", "statements:\n  - effect: allow\n    actions: accesskey:Update\n    resources: [\""+res+"\"]\n")
		if got := codes(LintAt(p, fixedNow)); !slices.Contains(got, "self-update@1") {
			t.Errorf("resource %s: got %v, want self-update", res, got)
		}
	}
	for _, res := range []string{"cfak_ABCDEFGHIJKLMNOPQRSTUVWX", "role/*", "alias/cf*"} {
		p := mustParse(t, "l.yaml", "statements:\n  - effect: allow\n    actions: accesskey:Update\n    resources: [\""+res+"\"]\n")
		if got := codes(LintAt(p, fixedNow)); slices.Contains(got, "self-update@1") {
			t.Errorf("resource %s: got %v, want no self-update", res, got)
		}
	}
}
