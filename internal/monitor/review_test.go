package monitor

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/audit"
)

// TestReviewClaimedCredentialNotActedOn: a failed access-key
// authentication is recorded against the key id it claimed (principal
// kind access-key, id and accessor the id), but the id is not secret, so
// anyone can make such records. They must not make the automatic response
// disable the key, nor teach the new-source rule the attacker's network
// (so the key's real use from there would pass unnoticed) or alert on it
// as the key's own use. (With respond: revoke_token on denied_burst, 20
// bad secrets sent with a key id disabled that key.)
func TestReviewClaimedCredentialNotActedOn(t *testing.T) {
	const id = "cfak_AAAAAAAAAAAAAAAAAAAAAAAA"
	rules := DefaultRules()
	rules.DeniedBurst.Respond = RespondRevoke
	rules.NewSource.Respond = RespondRevoke
	var mu sync.Mutex
	var acted []string
	e, err := NewEngine(rules, nil, func(_ context.Context, a Alert) error {
		mu.Lock()
		defer mu.Unlock()
		acted = append(acted, a.Rule+" "+a.Accessor)
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	use := func(src, outcome, code string) []Alert {
		r := &audit.Record{Time: now, Source: src, Action: "key:List", Outcome: outcome, ErrorCode: code, Status: 200,
			Principal: audit.Principal{Kind: "access-key", ID: id, Accessor: id}}
		if code != "" {
			r.Status = 401
		}
		now = now.Add(time.Second)
		return e.Observe(context.Background(), r)
	}
	// The key in use from its network.
	use("10.0.0.5", "ok", "")
	// An attacker elsewhere sends bad secrets with the key's id.
	var raised []Alert
	for i := range 40 {
		raised = append(raised, use(fmt.Sprintf("192.0.2.%d", i%3), "error", "unauthenticated")...)
	}
	mu.Lock()
	if len(acted) > 0 {
		t.Errorf("the automatic response acted on a credential that was only claimed: %v", acted)
	}
	mu.Unlock()
	for _, a := range raised {
		if a.Rule == RuleNewSource {
			t.Errorf("a failed authentication counted as the key's use from a new network: %+v", a)
		}
	}
	// The key itself, used from the attacker's network, is news.
	if got := use("192.0.2.1", "ok", ""); !hasRule(got, RuleNewSource) {
		t.Errorf("the key's first real use from 192.0.2.0/24 raised %v, want %s", got, RuleNewSource)
	}
}

func hasRule(as []Alert, rule string) bool {
	for _, a := range as {
		if a.Rule == rule {
			return true
		}
	}
	return false
}
