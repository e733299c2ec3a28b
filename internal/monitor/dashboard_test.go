package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/kmsplugin"
)

// The Grafana dashboard (deploy/grafana/coffer-dashboard.json) may only
// query metrics that the server (this package) or the KMS plugin
// (internal/kmsplugin) really register. These tests keep it so.

const dashboardPath = "../../deploy/grafana/coffer-dashboard.json"

// Source files whose metric names must all show up in registeredMetrics:
// when a metric is added there, exercise it below so that Gather reports it.
var metricSources = []string{"metrics.go", "../kmsplugin/health.go"}

// dashboardMustShow are the families the dashboard is for; a panel that
// loses its query fails the test.
var dashboardMustShow = []string{
	"coffer_sealed",
	"coffer_requests_total",
	"coffer_request_duration_seconds",
	"coffer_auth_failures_total",
	"coffer_tokens_active",
	"coffer_key_operations_total",
	"coffer_key_seconds_since_rotation",
	"coffer_key_rotation_period_seconds",
	"coffer_audit_write_seconds",
	"coffer_audit_batch_records",
	"coffer_audit_failures_total",
	"coffer_storage_duration_seconds",
	"coffer_kms_plugin_operations_total",
	"coffer_kms_plugin_operation_duration_seconds",
	"coffer_kms_plugin_healthy",
}

type gridPos struct {
	H, W, X, Y *int
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         *int    `json:"id"`
	Type       string  `json:"type"`
	Title      string  `json:"title"`
	GridPos    gridPos `json:"gridPos"`
	Datasource *dsRef  `json:"datasource"`
	Targets    []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource *dsRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *dsRef          `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) (*dashboard, []byte) {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return &d, b
}

// allPanels flattens rows (collapsed rows keep their panels inside).
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// query is one PromQL expression of the dashboard and where it is.
type query struct {
	where, expr string
	selector    bool // a panel target: must filter by instance
}

// dashboardQueries collects every "expr" anywhere in the JSON (panels,
// nested panels, annotations) and the template variables' queries.
func dashboardQueries(t *testing.T, d *dashboard, raw []byte) []query {
	t.Helper()
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	var out []query
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch v := v.(type) {
		case map[string]any:
			if title, ok := v["title"].(string); ok {
				where = fmt.Sprintf("%s %q", v["type"], title)
			}
			if e, ok := v["expr"]; ok {
				s, ok := e.(string)
				if !ok || strings.TrimSpace(s) == "" {
					t.Errorf("%s: expr is not a non-empty string: %v", where, e)
				} else {
					out = append(out, query{where: where, expr: s, selector: true})
				}
			}
			for k, c := range v {
				if k != "templating" {
					walk(c, where)
				}
			}
		case []any:
			for _, c := range v {
				walk(c, where)
			}
		}
	}
	walk(tree, "dashboard")
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var s string
		var obj struct {
			Query string `json:"query"`
		}
		switch {
		case json.Unmarshal(v.Query, &s) == nil:
		case json.Unmarshal(v.Query, &obj) == nil:
			s = obj.Query
		default:
			t.Errorf("variable %s: query %s", v.Name, v.Query)
		}
		for _, e := range []string{s, v.Definition} {
			if e != "" {
				out = append(out, query{where: "variable " + v.Name, expr: e})
			}
		}
	}
	return out
}

var (
	promString = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promIdent  = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	// a vector selector of a Coffer metric with its matchers, if any
	promSelector = regexp.MustCompile(`(coffer_[a-zA-Z0-9_:]*)\s*(\{[^}]*\})?`)
)

// metricNames returns the Coffer metric names a PromQL expression uses.
// String literals (label values) are removed first.
func metricNames(expr string) []string {
	var out []string
	for _, id := range promIdent.FindAllString(promString.ReplaceAllString(expr, `""`), -1) {
		if strings.HasPrefix(id, "coffer_") {
			out = append(out, id)
		}
	}
	return out
}

// balanced reports whether (), {} and [] nest properly outside strings.
func balanced(expr string) bool {
	var stack []rune
	pairs := map[rune]rune{')': '(', '}': '{', ']': '['}
	for _, c := range promString.ReplaceAllString(expr, `""`) {
		switch c {
		case '(', '{', '[':
			stack = append(stack, c)
		case ')', '}', ']':
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0
}

// known reports whether name is a registered family, or a series of one:
// <histogram>_bucket, <histogram|summary>_sum and _count.
func known(name string, families map[string]string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch families[base] {
		case "HISTOGRAM", "GAUGE_HISTOGRAM":
			return true
		case "SUMMARY":
			return suffix != "_bucket"
		}
	}
	return false
}

// unknownMetrics returns the Coffer metric names of expr that nothing
// registers.
func unknownMetrics(expr string, families map[string]string) []string {
	var out []string
	for _, n := range metricNames(expr) {
		if !known(n, families) {
			out = append(out, n)
		}
	}
	return out
}

// fakeCoffer answers the plugin's health round trip.
type fakeCoffer struct{}

func (fakeCoffer) Encrypt(_ context.Context, r client.EncryptRequest) (*client.EncryptResponse, error) {
	return &client.EncryptResponse{Ciphertext: r.Plaintext, KeyID: "0b9a3c2e-5d41-4f6a-9b7c-1e2d3f4a5b6c", KeyVersion: 1}, nil
}

func (fakeCoffer) Decrypt(_ context.Context, r client.DecryptRequest) (*client.DecryptResponse, error) {
	return &client.DecryptResponse{Plaintext: r.Ciphertext, KeyID: "0b9a3c2e-5d41-4f6a-9b7c-1e2d3f4a5b6c", KeyVersion: 1}, nil
}

// registeredMetrics returns every family the server's and the plugin's
// registries expose, by type. Vectors appear only once they have a child,
// so every metric is exercised once first.
func registeredMetrics(t *testing.T) map[string]string {
	t.Helper()
	families := map[string]string{}

	// The server: monitor.NewMetrics and its scrape-time gauges.
	m := NewMetrics(0, func() State {
		return State{Initialized: true, Tokens: 1, Seal: &SealState{Type: "pkcs11", Healthy: true, UnsealSeconds: 0.01}, Keys: []KeyState{
			{ID: "key-a", State: "enabled", LastRotated: time.Now().Add(-time.Hour), RotationPeriod: 24 * time.Hour},
		}}
	})
	m.ObserveRequest(&audit.Record{Action: "kms:Encrypt", Door: "rest", Outcome: "ok", KeyID: "key-a"}, time.Millisecond)
	m.ObserveRequest(&audit.Record{Action: "kms:Decrypt", Door: "rest", Outcome: "error", ErrorCode: "unauthenticated"}, time.Millisecond)
	m.ObserveRequest(&audit.Record{Action: "kms:Decrypt", Door: "rest", Outcome: "ok", Items: []audit.Item{{KeyID: "key-a", Outcome: "ok"}}}, time.Millisecond)
	m.ObserveAudit(time.Millisecond, 2, nil)
	m.ObserveAudit(time.Millisecond, 0, errors.New("disk full"))
	m.Dropped("audit_webhook", 1)
	m.Alert(RuleSpike)
	TimedBackend{M: m}.obs("get", time.Now())
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		families[mf.GetName()] = mf.GetType().String()
	}

	// The KMS plugin: its registry is unexported, so scrape its /metrics.
	pm := kmsplugin.NewMetrics()
	p := kmsplugin.New(kmsplugin.Config{Coffer: fakeCoffer{}, Key: "alias/k8s", Metrics: pm, Logger: slog.New(slog.DiscardHandler)})
	if err := p.Check(context.Background()); err != nil { // healthy, key_id_info, timestamps
		t.Fatal(err)
	}
	p.Encrypt(context.Background(), "uid", nil) // operations_total, duration (InvalidArgument, no network)
	rec := httptest.NewRecorder()
	kmsplugin.HealthHandler(p, pm, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("plugin /metrics: %d %s", rec.Code, rec.Body)
	}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			families[f[2]] = strings.ToUpper(f[3]) // counter, gauge, histogram, summary, untyped
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return families
}

// TestRegisteredMetricsComplete keeps registeredMetrics exhaustive: every
// coffer_ name declared in the metric sources must be gathered.
func TestRegisteredMetricsComplete(t *testing.T) {
	families := registeredMetrics(t)
	lit := regexp.MustCompile(`"(coffer_[a-zA-Z0-9_:]+)"`)
	n := 0
	for _, src := range metricSources {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
			n++
			if _, ok := families[m[1]]; !ok {
				t.Errorf("%s declares %s but registeredMetrics does not gather it: exercise it there", src, m[1])
			}
		}
	}
	if n < 20 {
		t.Errorf("found only %d metric names in %v; did the sources move?", n, metricSources)
	}
}

func TestDashboardMetricsExist(t *testing.T) {
	d, raw := loadDashboard(t)
	families := registeredMetrics(t)
	queries := dashboardQueries(t, d, raw)
	if len(queries) < 20 {
		t.Fatalf("only %d queries found in the dashboard", len(queries))
	}
	used := map[string]bool{}
	for _, q := range queries {
		if !balanced(q.expr) {
			t.Errorf("%s: unbalanced brackets in %q", q.where, q.expr)
		}
		names := metricNames(q.expr)
		if len(names) == 0 {
			t.Errorf("%s: %q queries no coffer_ metric", q.where, q.expr)
		}
		for _, n := range names {
			used[n] = true
		}
		if bad := unknownMetrics(q.expr, families); len(bad) > 0 {
			t.Errorf("%s: %q uses %v, which neither the server (internal/monitor) nor the KMS plugin (internal/kmsplugin) registers", q.where, q.expr, bad)
		}
		if !q.selector {
			continue
		}
		// Every selector follows the dashboard's instance variable.
		for _, s := range promSelector.FindAllStringSubmatch(q.expr, -1) {
			want := `instance=~"$instance"`
			if strings.HasPrefix(s[1], "coffer_kms_plugin_") {
				want = `instance=~"$plugin_instance"`
			}
			if !strings.Contains(s[2], want) {
				t.Errorf("%s: selector %s%s in %q lacks %s", q.where, s[1], s[2], q.expr, want)
			}
		}
	}
	for _, n := range dashboardMustShow {
		if !used[n] && !used[n+"_bucket"] && !used[n+"_count"] && !used[n+"_sum"] {
			t.Errorf("no panel shows %s", n)
		}
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("%d queries use %d series names: %s", len(queries), len(names), strings.Join(names, " "))
}

func TestDashboardLayout(t *testing.T) {
	d, _ := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both are needed", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want 36 or later", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s: datasource %+v, want uid ${datasource}", v.Name, v.Datasource)
		}
	}
	for name, typ := range map[string]string{"datasource": "datasource", "instance": "query", "plugin_instance": "query"} {
		if vars[name] != typ {
			t.Errorf("template variable %s: type %q, want %q", name, vars[name], typ)
		}
	}

	ids := map[int]string{}
	nonRow := 0
	for _, p := range allPanels(d.Panels) {
		if p.ID == nil {
			t.Errorf("panel %q has no id", p.Title)
		} else if prev, dup := ids[*p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, *p.ID)
		} else {
			ids[*p.ID] = p.Title
		}
		if p.Title == "" {
			t.Errorf("panel %v has no title", p.ID)
		}
		g := p.GridPos
		if g.H == nil || g.W == nil || g.X == nil || g.Y == nil {
			t.Errorf("panel %q: gridPos needs h, w, x and y", p.Title)
			continue
		}
		if *g.H < 1 || *g.W < 1 || *g.X < 0 || *g.Y < 0 || *g.X+*g.W > 24 {
			t.Errorf("panel %q: gridPos h=%d w=%d x=%d y=%d out of the 24-column grid", p.Title, *g.H, *g.W, *g.X, *g.Y)
		}
		if p.Type == "row" {
			continue
		}
		nonRow++
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %q needs an expr and a unique refId", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %+v", p.Title, tg.RefID, tg.Datasource)
			}
		}
	}
	if nonRow < 10 {
		t.Errorf("%d panels: want at least 10", nonRow)
	}
	// Top-level panels must not overlap (a collapsed row's panels are laid
	// out when it opens, so only the top level is checked).
	var top []panel
	for _, p := range d.Panels {
		if p.GridPos.H != nil && p.GridPos.W != nil && p.GridPos.X != nil && p.GridPos.Y != nil {
			top = append(top, p)
		}
	}
	for i, a := range top {
		for _, b := range top[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if *ga.X < *gb.X+*gb.W && *gb.X < *ga.X+*ga.W && *ga.Y < *gb.Y+*gb.H && *gb.Y < *ga.Y+*ga.H {
				t.Errorf("panels %q and %q overlap", a.Title, b.Title)
			}
		}
	}
}

// TestDashboardCheckerCatchesTypos shows the checks above can fail.
func TestDashboardCheckerCatchesTypos(t *testing.T) {
	families := registeredMetrics(t)
	for expr, want := range map[string]string{
		`rate(coffer_request_total{instance=~"$instance"}[5m])`:                                "coffer_request_total",
		`histogram_quantile(0.99, sum by (le) (rate(coffer_audit_write_seconds_buckets[5m])))`: "coffer_audit_write_seconds_buckets",
		`rate(coffer_requests_total_bucket[5m])`:                                               "coffer_requests_total_bucket", // a counter has no buckets
		`coffer_kms_plugin_health`:                                                             "coffer_kms_plugin_health",
		`sum(rate(coffer_requests_total{code="coffer_nope"}[5m])) / on() coffer_tokens_activ`:  "coffer_tokens_activ",
	} {
		if got := unknownMetrics(expr, families); len(got) != 1 || got[0] != want {
			t.Errorf("unknownMetrics(%q) = %v, want [%s]", expr, got, want)
		}
	}
	for _, expr := range []string{
		`histogram_quantile(0.5, sum by (le) (rate(coffer_storage_duration_seconds_bucket[5m])))`,
		`rate(coffer_kms_plugin_operation_duration_seconds_count[5m])`,
		`coffer_key_seconds_since_rotation > on (instance, key) coffer_key_rotation_period_seconds`,
		`label_values(coffer_sealed, instance)`,
	} {
		if got := unknownMetrics(expr, families); len(got) != 0 {
			t.Errorf("unknownMetrics(%q) = %v, want none", expr, got)
		}
	}
	if balanced(`sum(rate(coffer_requests_total[5m])`) || !balanced(`sum(rate(coffer_requests_total{code=")"}[5m]))`) {
		t.Error("balanced is wrong")
	}
}

// TestAlertRulesMetricsExist: every coffer_ metric an alert rule in
// deploy/prometheus/coffer-rules.yaml names is one the server or the
// plugin registers (a renamed metric silently disarms its alert).
func TestAlertRulesMetricsExist(t *testing.T) {
	b, err := os.ReadFile("../../deploy/prometheus/coffer-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	families := registeredMetrics(t)
	name := regexp.MustCompile(`coffer_[a-zA-Z0-9_:]+`)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		expr, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:")
		if !ok {
			continue
		}
		for _, m := range name.FindAllString(expr, -1) {
			n++
			base := m
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(m, suf); ok && families[b] == "HISTOGRAM" {
					base = b
				}
			}
			if _, ok := families[base]; !ok {
				t.Errorf("an alert rule uses %s, which nothing registers", m)
			}
		}
	}
	if n < 5 {
		t.Fatalf("found only %d metric names in the alert rules", n)
	}
}
