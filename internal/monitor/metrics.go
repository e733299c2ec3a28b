// Package monitor watches a running Coffer: Prometheus metrics of requests,
// keys, the seal, tokens, the audit trail and storage (Metrics), and alert
// rules evaluated in real time over the audit stream (Engine).
//
// Label cardinality is bounded: actions, doors and error codes are fixed
// sets; key ids become labels for at most MaxKeyLabels keys (the first ones
// seen, or the first by id at scrape time); later keys count under
// key="_other". See docs/operations.md.
package monitor

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/storage"
)

// DefaultMaxKeyLabels bounds the key label.
const DefaultMaxKeyLabels = 200

// OtherKey is the key label of keys past the cap.
const OtherKey = "_other"

// KeyState is what the key gauges report of one key.
type KeyState struct {
	ID              string
	State           string
	LastRotated     time.Time
	RotationPeriod  time.Duration // 0: no automatic rotation
	PendingDeletion bool
}

// State is read at scrape time.
type State struct {
	Initialized, Sealed bool
	Tokens              int
	Keys                []KeyState
	// Seal is the auto-unseal's state; nil under Shamir unseal shares.
	Seal *SealState
	// MigrationPending: the store is protected by another seal than the
	// configured one.
	MigrationPending bool
	// SecretRotationsOK and SecretRotationsFailed count secret rotations
	// since start; SecretRotationsFailing is how many secrets' rotation
	// is failing (no secret names: they are not labels).
	SecretRotationsOK, SecretRotationsFailed, SecretRotationsFailing int64
}

// SealState is what the metrics show of an auto-unseal.
type SealState struct {
	Type    string
	Healthy bool
	// Failing is set while the server is sealed and its last auto-unseal
	// attempt failed.
	Failing bool
	// Failures counts failed auto-unseal attempts since start.
	Failures int64
	// UnsealSeconds is how long the last successful auto-unseal took.
	UnsealSeconds float64
}

// Metrics holds Coffer's collectors in their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	keyOps       *prometheus.CounterVec
	batchItems   *prometheus.CounterVec
	auditWrite   prometheus.Histogram
	auditBatch   prometheus.Histogram
	auditFail    prometheus.Counter
	auditRecords prometheus.Counter
	auditDropped *prometheus.CounterVec
	storage      *prometheus.HistogramVec
	alerts       *prometheus.CounterVec

	maxKeys int
	mu      sync.Mutex
	keys    map[string]bool
}

// NewMetrics registers the collectors; state (may be nil) is called at each
// scrape for the gauges.
func NewMetrics(maxKeys int, state func() State) *Metrics {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeyLabels
	}
	m := &Metrics{Registry: prometheus.NewRegistry(), maxKeys: maxKeys, keys: map[string]bool{}}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_requests_total",
		Help: "API requests by action, front door and outcome (ok or the error code)."}, []string{"action", "door", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "coffer_request_duration_seconds",
		Help: "Request latency by action, audit included.", Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}},
		[]string{"action"})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_auth_failures_total",
		Help: "Requests refused by authentication (unauthenticated), authorization (permission_denied) or the per-source failure budget (too_many_auth_failures)."}, []string{"reason"})
	m.keyOps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_key_operations_total",
		Help: "Successful cryptographic operations per key (at most max_key_labels keys; the rest under key=\"_other\")."}, []string{"key", "action"})
	m.batchItems = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_batch_items_total",
		Help: "Items of batch requests by action and outcome (ok or the error code); each item also counts in coffer_key_operations_total and coffer_auth_failures_total as its single request would."},
		[]string{"action", "code"})
	m.auditWrite = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "coffer_audit_write_seconds",
		Help: "Time to write and fsync one group-commit batch of audit records.", Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16)})
	m.auditBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "coffer_audit_batch_records",
		Help: "Records per group-commit batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)})
	m.auditFail = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_audit_failures_total",
		Help: "Audit batches that could not be written durably (their requests got 503)."})
	m.auditRecords = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_audit_records_total",
		Help: "Audit records written durably."})
	m.auditDropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_audit_mirror_dropped_total",
		Help: "Lines dropped by best-effort audit mirrors and alert sinks."}, []string{"sink"})
	m.storage = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "coffer_storage_duration_seconds",
		Help: "Storage backend latency by operation.", Buckets: prometheus.ExponentialBuckets(0.00001, 2.5, 14)}, []string{"op"})
	m.alerts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_alerts_total",
		Help: "Alerts raised by the audit-stream rules."}, []string{"rule"})
	m.Registry.MustRegister(m.requests, m.duration, m.authFailures, m.keyOps, m.batchItems, m.auditWrite, m.auditBatch,
		m.auditFail, m.auditRecords, m.auditDropped, m.storage, m.alerts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if state != nil {
		m.Registry.MustRegister(&stateCollector{m: m, state: state})
	}
	return m
}

// keyLabel bounds the key label's values.
func (m *Metrics) keyLabel(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys[id] {
		return id
	}
	if len(m.keys) >= m.maxKeys {
		return OtherKey
	}
	m.keys[id] = true
	return id
}

// ObserveRequest counts one finished request.
func (m *Metrics) ObserveRequest(r *audit.Record, latency time.Duration) {
	if r.Phase == audit.PhaseIntent {
		return
	}
	code := r.ErrorCode
	if r.Outcome == "ok" {
		code = "ok"
	}
	m.requests.WithLabelValues(r.Action, r.Door, code).Inc()
	m.duration.WithLabelValues(r.Action).Observe(latency.Seconds())
	if len(r.Items) == 0 || r.Outcome != "ok" {
		// A single request, or a batch whose answer was withheld (its
		// record could not be written): one operation.
		m.operation(r.Action, r.Outcome, r.ErrorCode, r.KeyID)
		return
	}
	// A batch is as many operations as it has items.
	for i := range r.Items {
		it := &r.Items[i]
		m.operation(r.Action, it.Outcome, it.ErrorCode, it.KeyID)
		code := it.ErrorCode
		if it.Outcome == "ok" {
			code = "ok"
		}
		m.batchItems.WithLabelValues(r.Action, code).Inc()
	}
}

// operation counts one operation (a request, or one item of a batch).
func (m *Metrics) operation(action, outcome, errorCode, keyID string) {
	switch errorCode {
	case "unauthenticated", "permission_denied", "too_many_auth_failures":
		m.authFailures.WithLabelValues(errorCode).Inc()
	}
	if outcome == "ok" && keyID != "" && len(action) > 4 && action[:4] == "kms:" {
		m.keyOps.WithLabelValues(m.keyLabel(keyID), action).Inc()
	}
}

// ObserveAudit is the audit.Options.Observe hook.
func (m *Metrics) ObserveAudit(d time.Duration, n int, err error) {
	m.auditWrite.Observe(d.Seconds())
	if err != nil {
		m.auditFail.Inc()
		return
	}
	if n > 0 {
		m.auditBatch.Observe(float64(n))
		m.auditRecords.Add(float64(n))
	}
}

// AuditFailed counts a refused request whose record could not be written
// outside a batch (for example a queue that closed).
func (m *Metrics) AuditFailed() { m.auditFail.Inc() }

// Dropped counts lines a best-effort sink dropped.
func (m *Metrics) Dropped(sink string, n int) { m.auditDropped.WithLabelValues(sink).Add(float64(n)) }

// Alert counts an alert.
func (m *Metrics) Alert(rule string) { m.alerts.WithLabelValues(rule).Inc() }

// stateCollector reports gauges read at scrape time.
type stateCollector struct {
	m     *Metrics
	state func() State
}

var (
	descSealed      = prometheus.NewDesc("coffer_sealed", "1 when the server is sealed.", nil, nil)
	descInitialized = prometheus.NewDesc("coffer_initialized", "1 when the server is initialized.", nil, nil)
	descTokens      = prometheus.NewDesc("coffer_tokens_active", "Tokens in memory (0 while sealed).", nil, nil)
	descKeys        = prometheus.NewDesc("coffer_keys", "Keys by state.", []string{"state"}, nil)
	descSinceRot    = prometheus.NewDesc("coffer_key_seconds_since_rotation", "Seconds since each key's last rotation (or creation).", []string{"key"}, nil)
	descRotPeriod   = prometheus.NewDesc("coffer_key_rotation_period_seconds", "Each key's automatic rotation period; absent when it has none.", []string{"key"}, nil)
	descSealHealthy = prometheus.NewDesc("coffer_seal_healthy", "1 when the auto-unseal's last health check passed (the HSM, TPM or unsealing Coffer answered and its key is usable); absent under Shamir.", []string{"type"}, nil)
	descSealFailing = prometheus.NewDesc("coffer_auto_unseal_failing", "1 while the server is sealed and its last auto-unseal attempt failed.", []string{"type"}, nil)
	descSealFails   = prometheus.NewDesc("coffer_auto_unseal_failures_total", "Failed auto-unseal attempts since the server started.", []string{"type"}, nil)
	descUnsealSecs  = prometheus.NewDesc("coffer_unseal_duration_seconds", "How long the last successful auto-unseal took (the seal's unwrap and loading the keyring and caches).", []string{"type"}, nil)
	descSecretRot   = prometheus.NewDesc("coffer_secret_rotations_total", "Secret rotations by result (ok or failed: a step failed and current was kept).", []string{"result"}, nil)
	descSecretFail  = prometheus.NewDesc("coffer_secret_rotations_failing", "Secrets whose last rotation attempt failed (retried with backoff), as of this replica's last rotation run.", nil, nil)
	descMigration   = prometheus.NewDesc("coffer_seal_migration_pending", "1 when the store is protected by another seal than the configured one (coffer operator migrate-seal completes it).", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSealed, descInitialized, descTokens, descKeys, descSinceRot, descRotPeriod,
		descSealHealthy, descSealFailing, descSealFails, descUnsealSecs, descMigration, descSecretRot, descSecretFail} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.state()
	ch <- prometheus.MustNewConstMetric(descSealed, prometheus.GaugeValue, b2f(st.Sealed))
	ch <- prometheus.MustNewConstMetric(descInitialized, prometheus.GaugeValue, b2f(st.Initialized))
	ch <- prometheus.MustNewConstMetric(descTokens, prometheus.GaugeValue, float64(st.Tokens))
	ch <- prometheus.MustNewConstMetric(descMigration, prometheus.GaugeValue, b2f(st.MigrationPending))
	ch <- prometheus.MustNewConstMetric(descSecretRot, prometheus.CounterValue, float64(st.SecretRotationsOK), "ok")
	ch <- prometheus.MustNewConstMetric(descSecretRot, prometheus.CounterValue, float64(st.SecretRotationsFailed), "failed")
	ch <- prometheus.MustNewConstMetric(descSecretFail, prometheus.GaugeValue, float64(st.SecretRotationsFailing))
	if s := st.Seal; s != nil {
		ch <- prometheus.MustNewConstMetric(descSealHealthy, prometheus.GaugeValue, b2f(s.Healthy), s.Type)
		ch <- prometheus.MustNewConstMetric(descSealFailing, prometheus.GaugeValue, b2f(s.Failing), s.Type)
		ch <- prometheus.MustNewConstMetric(descSealFails, prometheus.CounterValue, float64(s.Failures), s.Type)
		ch <- prometheus.MustNewConstMetric(descUnsealSecs, prometheus.GaugeValue, s.UnsealSeconds, s.Type)
	}
	byState := map[string]int{}
	keys := st.Keys
	sort.Slice(keys, func(i, j int) bool { return keys[i].ID < keys[j].ID })
	now := time.Now()
	n := 0
	for _, k := range keys {
		byState[k.State]++
		if n >= c.m.maxKeys {
			continue // bounded: only the first maxKeys by id
		}
		n++
		ch <- prometheus.MustNewConstMetric(descSinceRot, prometheus.GaugeValue, now.Sub(k.LastRotated).Seconds(), k.ID)
		if k.RotationPeriod > 0 {
			ch <- prometheus.MustNewConstMetric(descRotPeriod, prometheus.GaugeValue, k.RotationPeriod.Seconds(), k.ID)
		}
	}
	for s, n := range byState {
		ch <- prometheus.MustNewConstMetric(descKeys, prometheus.GaugeValue, float64(n), s)
	}
}

// TimedBackend measures a storage backend's latency.
type TimedBackend struct {
	storage.Backend
	M *Metrics
}

func (t TimedBackend) obs(op string, start time.Time) {
	t.M.storage.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// Get implements storage.Backend.
func (t TimedBackend) Get(ctx context.Context, key string) (storage.Entry, error) {
	defer t.obs("get", time.Now())
	return t.Backend.Get(ctx, key)
}

// List implements storage.Backend.
func (t TimedBackend) List(ctx context.Context, prefix string) ([]string, error) {
	defer t.obs("list", time.Now())
	return t.Backend.List(ctx, prefix)
}

// Apply implements storage.Backend.
func (t TimedBackend) Apply(ctx context.Context, ops ...storage.Op) error {
	defer t.obs("apply", time.Now())
	return t.Backend.Apply(ctx, ops...)
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
