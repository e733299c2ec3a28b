package kmsplugin

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/status"
)

// Metrics are the plugin's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	reg       *prometheus.Registry
	ops       *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	keyID     *prometheus.GaugeVec
	healthy   prometheus.Gauge
	lastCheck prometheus.Gauge
	lastOK    prometheus.Gauge
}

// NewMetrics registers the plugin's metrics in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coffer_kms_plugin_operations_total",
			Help: "KMS v2 operations by name (encrypt, decrypt, status) and outcome (ok or a gRPC code).",
		}, []string{"operation", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coffer_kms_plugin_operation_duration_seconds",
			Help:    "Latency of KMS v2 operations.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"operation"}),
		keyID: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coffer_kms_plugin_key_id_info",
			Help: "1 for the SHA-256 of the current key_id (the key_id itself is not secret but is long).",
		}, []string{"key_id_hash"}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coffer_kms_plugin_healthy",
			Help: "1 when the last encrypt/decrypt round trip with the configured key worked.",
		}),
		lastCheck: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coffer_kms_plugin_last_health_check_timestamp_seconds",
			Help: "Unix time of the last health check.",
		}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coffer_kms_plugin_last_successful_health_check_timestamp_seconds",
			Help: "Unix time of the last successful health check.",
		}),
	}
	m.reg.MustRegister(m.ops, m.latency, m.keyID, m.healthy, m.lastCheck, m.lastOK,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) observe(op string, start time.Time, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = status.Code(err).String()
	}
	m.ops.WithLabelValues(op, outcome).Inc()
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (m *Metrics) setKeyID(keyID string) {
	if m == nil {
		return
	}
	m.keyID.Reset()
	m.keyID.WithLabelValues(KeyIDHash(keyID)).Set(1)
}

func (m *Metrics) setHealth(ok bool, at time.Time) {
	if m == nil {
		return
	}
	m.lastCheck.Set(float64(at.Unix()))
	if ok {
		m.healthy.Set(1)
		m.lastOK.Set(float64(at.Unix()))
	} else {
		m.healthy.Set(0)
	}
}

// HealthHandler serves /metrics, /livez and /readyz.
//
// /livez fails only when the plugin itself is broken (its gRPC server
// stopped), never because Coffer is unreachable: restarting the plugin would
// not help. /readyz fails when the last round trip failed or is stale, and
// names the error class (unreachable, key_unusable, auth, sealed, ...). With
// a client of several Coffer replicas the round trip fails over like every
// call, so /readyz is ok while any replica answers; "server" names the one
// in use.
func HealthHandler(p *Plugin, m *Metrics, serving func() bool) http.Handler {
	mux := http.NewServeMux()
	if m != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		if serving != nil && !serving() {
			writeHealth(w, http.StatusServiceUnavailable, map[string]string{"status": "grpc server not serving"})
			return
		}
		writeHealth(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		keyID, class, err := p.Health()
		var body map[string]string
		if err != nil {
			body = map[string]string{"status": "not ready", "class": class, "error": err.Error(), "key_id": keyID}
		} else {
			body = map[string]string{"status": "ok", "key_id": keyID}
		}
		// With several Coffer replicas, say which one the plugin uses now.
		if a, ok := p.cfg.Coffer.(interface{ Address() string }); ok {
			body["server"] = a.Address()
		}
		if err != nil {
			writeHealth(w, http.StatusServiceUnavailable, body)
			return
		}
		writeHealth(w, http.StatusOK, body)
	})
	return mux
}

func writeHealth(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
