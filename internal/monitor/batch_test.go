package monitor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cofferkms/coffer/internal/audit"
)

// batchRecord is a decrypt-batch record with n items of one outcome.
func batchRecord(n int, code string) *audit.Record {
	r := &audit.Record{Type: audit.TypeRequest, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Action: "kms:Decrypt",
		Principal: audit.Principal{Kind: "token", Accessor: "acc_batch"}, Source: "10.0.0.1", Outcome: "ok", Status: 200}
	for i := range n {
		it := audit.Item{KeyID: "k-" + strings.Repeat("x", i%3), Outcome: "ok", Version: 1}
		if code != "" {
			it.Outcome, it.ErrorCode = "error", code
		}
		r.AddItem(it)
	}
	return r
}

// TestBatchItemsAreOperations: the alert engine counts a batch's items as
// the single requests they stand for.
func TestBatchItemsAreOperations(t *testing.T) {
	e, err := NewEngine(DefaultRules(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	alerts := e.Observe(context.Background(), batchRecord(25, "permission_denied"))
	var denied bool
	for _, a := range alerts {
		denied = denied || a.Rule == RuleDenied
	}
	if !denied {
		t.Fatalf("25 denied items raised %+v, want denied_burst", alerts)
	}
	// 250 decrypted items in one batch are a spike, as 250 decrypts are.
	e, _ = NewEngine(DefaultRules(), nil, nil, nil)
	alerts = e.Observe(context.Background(), batchRecord(250, ""))
	if len(alerts) != 1 || alerts[0].Rule != RuleSpike {
		t.Fatalf("250 decrypted items raised %+v, want one spike", alerts)
	}
	// A few denied items are a few denials.
	e, _ = NewEngine(DefaultRules(), nil, nil, nil)
	if alerts := e.Observe(context.Background(), batchRecord(5, "permission_denied")); len(alerts) != 0 {
		t.Fatalf("5 denied items raised %+v", alerts)
	}
}

func TestBatchItemsCounted(t *testing.T) {
	m := NewMetrics(0, nil)
	m.ObserveRequest(batchRecord(7, "permission_denied"), time.Millisecond)
	m.ObserveRequest(batchRecord(3, ""), time.Millisecond)
	if got := value(m.authFailures.WithLabelValues("permission_denied")); got != 7 {
		t.Errorf("auth failures %v, want 7", got)
	}
	if got := value(m.batchItems.WithLabelValues("kms:Decrypt", "permission_denied")); got != 7 {
		t.Errorf("denied items %v, want 7", got)
	}
	if got := value(m.keyOps.WithLabelValues("k-", "kms:Decrypt")); got != 1 {
		t.Errorf("key operations of k- %v, want 1", got)
	}
	if got := value(m.requests.WithLabelValues("kms:Decrypt", "", "ok")); got != 2 {
		t.Errorf("requests %v, want 2 (a batch is one request)", got)
	}
	// A batch whose record failed is one failed request: its items were
	// never answered.
	failed := batchRecord(4, "")
	failed.Outcome, failed.ErrorCode = "error", "audit_unavailable"
	m.ObserveRequest(failed, time.Millisecond)
	if got := value(m.batchItems.WithLabelValues("kms:Decrypt", "ok")); got != 3 {
		t.Errorf("ok items %v, want 3 (the withheld batch's items do not count)", got)
	}
}

func value(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}
