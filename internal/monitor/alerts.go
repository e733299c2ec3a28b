package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/cofferkms/coffer/internal/audit"
)

// Rule names.
const (
	RuleSpike       = "spike"
	RuleEnumeration = "enumeration"
	RuleDenied      = "denied_burst"
	RuleNewSource   = "new_source"
	RuleRoot        = "root_token"
	RuleKeyState    = "key_lifecycle"
	RuleLeaked      = "leaked_credential"
	RuleSeal        = "seal"
)

// RespondRevoke is the opt-in automatic response: revoke the token (by
// accessor) that triggered the alert. Root tokens are never revoked.
const RespondRevoke = "revoke_token"

// Duration is a time.Duration in YAML ("1m").
type Duration time.Duration

// UnmarshalJSON reads "1m30s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n float64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("duration: want a string like 1m")
		}
		*d = Duration(n * float64(time.Second))
		return nil
	}
	if v, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(v, "%d", &days); err != nil {
			return fmt.Errorf("duration %q", s)
		}
		*d = Duration(time.Duration(days) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// RuleCommon are the fields every rule has.
type RuleCommon struct {
	Disabled bool   `json:"disabled,omitempty"`
	Severity string `json:"severity,omitempty"`
	Respond  string `json:"respond,omitempty"` // "" or revoke_token
}

// Rules is the alert configuration (YAML); zero values take the defaults
// documented in docs/audit.md.
type Rules struct {
	// RepeatInterval silences the same alert (rule and subject) for this
	// long, in record time. Default 5m.
	RepeatInterval Duration `json:"repeat_interval,omitempty"`
	Spike          struct {
		RuleCommon
		Window  Duration `json:"window,omitempty"`  // 1m
		Floor   int      `json:"floor,omitempty"`   // 200
		Factor  float64  `json:"factor,omitempty"`  // 10
		Actions []string `json:"actions,omitempty"` // kms:Decrypt, kms:GenerateDataKey, secret:Read
	} `json:"spike"`
	Enumeration struct {
		RuleCommon
		Window   Duration `json:"window,omitempty"`   // 10m
		Distinct int      `json:"distinct,omitempty"` // 50
		Actions  []string `json:"actions,omitempty"`
	} `json:"enumeration"`
	DeniedBurst struct {
		RuleCommon
		Window Duration `json:"window,omitempty"` // 1m
		Count  int      `json:"count,omitempty"`  // 20
	} `json:"denied_burst"`
	NewSource struct {
		RuleCommon
		IPv4Prefix int      `json:"ipv4_prefix,omitempty"` // 24
		IPv6Prefix int      `json:"ipv6_prefix,omitempty"` // 64
		Idle       Duration `json:"idle,omitempty"`        // 30d
	} `json:"new_source"`
	RootToken struct {
		RuleCommon
	} `json:"root_token"`
	KeyLifecycle struct {
		RuleCommon
		RotationGrace Duration `json:"rotation_grace,omitempty"` // 1h
	} `json:"key_lifecycle"`
	LeakedCredential struct {
		RuleCommon
		// File lists leaked credentials, one per line: an accessor
		// (acc_...), "hmac:<hex>" (a token's audit HMAC), or a JSON object
		// with "accessor" or "token_hmac" (`coffer scan --report` output).
		File       string   `json:"file,omitempty"`
		Accessors  []string `json:"accessors,omitempty"`
		TokenHMACs []string `json:"token_hmacs,omitempty"`
	} `json:"leaked_credential"`
	// Seal fires when an auto-unseal attempt fails and when a quorum
	// operation starts (generate-root, rekey) or a seal migration share
	// is accepted (severity critical).
	Seal struct {
		RuleCommon
	} `json:"seal"`
	Sinks struct {
		Log          *bool  `json:"log,omitempty"` // default true
		Webhook      string `json:"webhook,omitempty"`
		Alertmanager string `json:"alertmanager,omitempty"` // base URL; POSTs /api/v2/alerts
	} `json:"sinks"`
}

// LoadRules reads a YAML rules file, rejecting unknown fields.
func LoadRules(path string) (Rules, error) {
	var r Rules
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := yaml.UnmarshalStrict(b, &r); err != nil {
		return r, fmt.Errorf("alert rules %s: %w", path, err)
	}
	return r, r.defaults()
}

func (r *Rules) defaults() error {
	def := func(d *Duration, v time.Duration) {
		if *d <= 0 {
			*d = Duration(v)
		}
	}
	defi := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&r.RepeatInterval, 5*time.Minute)
	def(&r.Spike.Window, time.Minute)
	defi(&r.Spike.Floor, 200)
	if r.Spike.Factor <= 0 {
		r.Spike.Factor = 10
	}
	if r.Spike.Actions == nil {
		r.Spike.Actions = []string{"kms:Decrypt", "kms:GenerateDataKey", "secret:Read"}
	}
	def(&r.Enumeration.Window, 10*time.Minute)
	defi(&r.Enumeration.Distinct, 50)
	if r.Enumeration.Actions == nil {
		r.Enumeration.Actions = []string{"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "key:Describe", "secret:Read"}
	}
	def(&r.DeniedBurst.Window, time.Minute)
	defi(&r.DeniedBurst.Count, 20)
	defi(&r.NewSource.IPv4Prefix, 24)
	defi(&r.NewSource.IPv6Prefix, 64)
	def(&r.NewSource.Idle, 30*24*time.Hour)
	def(&r.KeyLifecycle.RotationGrace, time.Hour)
	for _, c := range []*RuleCommon{&r.Spike.RuleCommon, &r.Enumeration.RuleCommon, &r.DeniedBurst.RuleCommon,
		&r.NewSource.RuleCommon, &r.RootToken.RuleCommon, &r.KeyLifecycle.RuleCommon, &r.LeakedCredential.RuleCommon, &r.Seal.RuleCommon} {
		if c.Respond != "" && c.Respond != RespondRevoke {
			return fmt.Errorf("respond %q: the only response is %s", c.Respond, RespondRevoke)
		}
		if c.Severity == "" {
			c.Severity = "warning"
		}
	}
	if r.RootToken.Severity == "warning" {
		r.RootToken.Severity = "info"
	}
	if r.LeakedCredential.Severity == "warning" {
		r.LeakedCredential.Severity = "critical"
	}
	if r.Seal.Severity == "warning" {
		r.Seal.Severity = "critical"
	}
	return nil
}

// DefaultRules are the built-in rules with their defaults.
func DefaultRules() Rules {
	var r Rules
	r.defaults()
	return r
}

// Alert is one alert raised by a rule.
type Alert struct {
	Rule     string    `json:"rule"`
	Severity string    `json:"severity"`
	Time     time.Time `json:"time"`
	Subject  string    `json:"subject"` // accessor or source address the alert is about
	Accessor string    `json:"accessor,omitempty"`
	Source   string    `json:"source,omitempty"`
	Seq      uint64    `json:"seq,omitempty"` // audit record that triggered it
	Summary  string    `json:"summary"`
	Response string    `json:"response,omitempty"`
}

// Sink delivers alerts; Send must not block.
type Sink interface{ Send(Alert) }

// Responder revokes a token by accessor.
type Responder func(ctx context.Context, a Alert) error

type window struct {
	start    time.Time
	count    int
	baseline float64
	seenBase bool
	distinct map[string]struct{}
}

type credState struct {
	nets     []netip.Prefix
	lastSeen time.Time
}

// Engine evaluates the rules over a stream of audit records. Observe is
// deterministic in the records' times, so a replay (`coffer alerts test`)
// raises what the live server would.
type Engine struct {
	rules   Rules
	sinks   []Sink
	respond Responder
	onAlert func(Alert)

	mu       sync.Mutex
	spike    map[string]*window
	enum     map[string]*window
	denied   map[string]*window
	creds    map[string]*credState
	last     map[string]time.Time
	leakAcc  map[string]bool
	leakHMAC map[string]bool
	leakMod  time.Time

	in chan audit.Record
}

// NewEngine builds an engine; respond may be nil (responses are then only
// reported as "would revoke").
func NewEngine(rules Rules, sinks []Sink, respond Responder, onAlert func(Alert)) (*Engine, error) {
	if err := rules.defaults(); err != nil {
		return nil, err
	}
	e := &Engine{rules: rules, sinks: sinks, respond: respond, onAlert: onAlert,
		spike: map[string]*window{}, enum: map[string]*window{}, denied: map[string]*window{},
		creds: map[string]*credState{}, last: map[string]time.Time{}, in: make(chan audit.Record, 4096)}
	if err := e.loadLeaked(); err != nil {
		return nil, err
	}
	return e, nil
}

// Run consumes records given to Feed until ctx ends.
func (e *Engine) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-e.in:
			e.Observe(ctx, &r)
		}
	}
}

// Feed queues a committed record; it never blocks (a full queue drops).
func (e *Engine) Feed(r *audit.Record) bool {
	select {
	case e.in <- *r:
		return true
	default:
		return false
	}
}

func subjectOf(r *audit.Record) string {
	if r.Principal.Accessor != "" {
		if claimed(r) {
			// Counted apart from the credential's own requests: anyone
			// can claim an access key id.
			return "claimed:" + r.Principal.Accessor
		}
		return r.Principal.Accessor
	}
	return "source:" + r.Source
}

// claimed reports whether r is a failed authentication, whose principal
// is only what the request claimed (a well-formed access key id, which is
// not secret), not a credential it proved. Such a record never triggers an
// automatic response and never counts as the credential's use. A leaked
// credential's record is not claimed: it matched the credential.
func claimed(r *audit.Record) bool {
	return !r.CredentialLeaked && (r.ErrorCode == "unauthenticated" || r.ErrorCode == "too_many_auth_failures")
}

// Observe evaluates one record and returns the alerts it raised.
func (e *Engine) Observe(ctx context.Context, r *audit.Record) []Alert {
	if r.Type == audit.TypeEvent && r.Action == "sys:AutoUnseal" {
		return e.observeSeal(ctx, r)
	}
	if r.Type != "" && r.Type != audit.TypeRequest || r.Phase == audit.PhaseIntent {
		return nil
	}
	e.mu.Lock()
	var out []Alert
	fire := func(rule string, c *RuleCommon, subject, summary string) {
		key := rule + "\x00" + subject
		if last, ok := e.last[key]; ok && r.Time.Sub(last) < time.Duration(e.rules.RepeatInterval) {
			return
		}
		forgetIfFull(e.last)
		e.last[key] = r.Time
		out = append(out, Alert{Rule: rule, Severity: c.Severity, Time: r.Time, Subject: subject,
			Accessor: r.Principal.Accessor, Source: r.Source, Seq: r.Seq, Summary: summary, Response: c.Respond})
	}
	subj := subjectOf(r)
	R := &e.rules
	if len(r.Items) == 0 || r.Outcome != "ok" {
		e.operationLocked(r, subj, fire)
	} else {
		// A batch is as many operations as it has items: each one counts
		// for the per-operation rules as the single request would.
		it := *r
		it.Items = nil
		for i := range r.Items {
			x := &r.Items[i]
			it.Resource, it.KeyID, it.Version, it.Context, it.Outcome, it.ErrorCode = x.Resource, x.KeyID, x.Version, x.Context, x.Outcome, x.ErrorCode
			e.operationLocked(&it, subj, fire)
		}
	}
	// 4. A credential used from a new network, or after a long idle period.
	if c := &R.NewSource; !c.Disabled && r.Principal.Accessor != "" && r.Source != "" && !claimed(r) {
		cs := e.creds[r.Principal.Accessor]
		if cs == nil {
			forgetIfFull(e.creds)
			cs = &credState{}
			e.creds[r.Principal.Accessor] = cs
		}
		if p, err := networkOf(r.Source, c.IPv4Prefix, c.IPv6Prefix); err == nil {
			if !slices.Contains(cs.nets, p) {
				if len(cs.nets) > 0 {
					fire(RuleNewSource, &c.RuleCommon, r.Principal.Accessor+" "+p.String(), fmt.Sprintf("credential %s used from a new network %s (known: %v)", r.Principal.Accessor, p, cs.nets))
				}
				if len(cs.nets) < 64 {
					cs.nets = append(cs.nets, p)
				}
			}
		}
		if !cs.lastSeen.IsZero() && r.Time.Sub(cs.lastSeen) > time.Duration(c.Idle) {
			fire(RuleNewSource, &c.RuleCommon, r.Principal.Accessor+" idle", fmt.Sprintf("credential %s used again after %s idle", r.Principal.Accessor, r.Time.Sub(cs.lastSeen).Round(time.Second)))
		}
		if r.Time.After(cs.lastSeen) {
			cs.lastSeen = r.Time
		}
	}
	// 5. Root token used at all.
	if c := &R.RootToken; !c.Disabled && r.Principal.Kind == "root" {
		fire(RuleRoot, &c.RuleCommon, subj, fmt.Sprintf("root token %s used for %s from %s", r.Principal.Accessor, r.Action, r.Source))
	}
	// 8. The last key: a quorum operation begins, or a migration share is
	// accepted (auto-unseal failures come as events, observeSeal).
	if c := &R.Seal; !c.Disabled && r.Outcome == "ok" {
		switch r.Action {
		case "sys:GenerateRootStart", "sys:RekeyStart", "sys:MigrateSeal":
			fire(RuleSeal, &c.RuleCommon, r.Action+" "+r.Source, fmt.Sprintf("%s from %s: a quorum of shares is being collected on this server", r.Action, r.Source))
		}
	}
	// 7. A credential reported as leaked is used again.
	if c := &R.LeakedCredential; !c.Disabled {
		e.reloadLeakedLocked()
		if r.CredentialLeaked || (r.Principal.Accessor != "" && e.leakAcc[r.Principal.Accessor]) || (r.TokenHMAC != "" && e.leakHMAC[r.TokenHMAC]) {
			fire(RuleLeaked, &c.RuleCommon, subj, fmt.Sprintf("a credential reported as leaked (%s) was used for %s from %s (outcome %s)", subj, r.Action, r.Source, r.Outcome))
		}
	}
	e.mu.Unlock()
	for i := range out {
		e.deliver(ctx, &out[i], r)
	}
	return out
}

// operationLocked applies the rules that count operations (spike,
// enumeration, denials, key lifecycle) to r, a request or one item of a
// batch. e.mu is held.
func (e *Engine) operationLocked(r *audit.Record, subj string, fire func(rule string, c *RuleCommon, subject, summary string)) {
	ok := r.Outcome == "ok"
	R := &e.rules

	// 1. Spike of decrypts / secret reads over the principal's baseline.
	if c := &R.Spike; !c.Disabled && ok && slices.Contains(c.Actions, r.Action) {
		w := roll(e.spike, subj, r.Time, time.Duration(c.Window), true)
		w.count++
		limit := max(float64(c.Floor), c.Factor*w.baseline)
		if float64(w.count) > limit {
			fire(RuleSpike, &c.RuleCommon, subj, fmt.Sprintf("%s made %d %s-class calls within %s (floor %d, baseline %.1f per window)",
				subj, w.count, r.Action, time.Duration(c.Window), c.Floor, w.baseline))
		}
	}
	// 2. Enumeration: many distinct keys or secrets read.
	if c := &R.Enumeration; !c.Disabled && ok && slices.Contains(c.Actions, r.Action) {
		res := r.KeyID
		if res == "" || strings.HasPrefix(r.Action, "secret:") {
			// A secret read names the key that wraps it, which many
			// secrets share: the secret itself is what was touched.
			res = r.Resource
		}
		if res != "" {
			w := roll(e.enum, subj, r.Time, time.Duration(c.Window), false)
			if len(w.distinct) <= c.Distinct {
				w.distinct[res] = struct{}{}
			}
			if len(w.distinct) > c.Distinct {
				fire(RuleEnumeration, &c.RuleCommon, subj, fmt.Sprintf("%s touched more than %d distinct keys or secrets within %s",
					subj, c.Distinct, time.Duration(c.Window)))
			}
		}
	}
	// 3. Burst of denied requests from a principal or a source.
	if c := &R.DeniedBurst; !c.Disabled && (r.ErrorCode == "unauthenticated" || r.ErrorCode == "permission_denied" || r.ErrorCode == "too_many_auth_failures") {
		for _, s := range []string{subj, "source:" + r.Source} {
			w := roll(e.denied, s, r.Time, time.Duration(c.Window), false)
			w.count++
			if w.count >= c.Count {
				fire(RuleDenied, &c.RuleCommon, s, fmt.Sprintf("%d denied requests (%s) from %s within %s", w.count, r.ErrorCode, s, time.Duration(c.Window)))
			}
			if s == "source:"+r.Source {
				break
			}
		}
	}
	// 6. Key lifecycle: use of a disabled or pending-deletion key, deletion scheduled.
	if c := &R.KeyLifecycle; !c.Disabled {
		switch {
		case r.ErrorCode == "key_disabled" || r.ErrorCode == "key_pending_deletion":
			fire(RuleKeyState, &c.RuleCommon, subj+" "+r.Resource, fmt.Sprintf("%s tried %s with %s key %s", subj, r.Action, strings.TrimPrefix(r.ErrorCode, "key_"), r.Resource))
		case ok && r.Action == "key:ScheduleDeletion":
			fire(RuleKeyState, &c.RuleCommon, "deletion "+r.Resource, fmt.Sprintf("%s scheduled the deletion of key %s", subj, r.Resource))
		}
	}
}

func (e *Engine) deliver(ctx context.Context, a *Alert, r *audit.Record) {
	if a.Response == RespondRevoke {
		switch {
		case a.Accessor == "" || r.Principal.Kind == "root":
			a.Response = "none (no revocable credential)"
		case claimed(r):
			a.Response = "none (the credential was claimed by a failed authentication, not used)"
		case e.respond == nil:
			a.Response = "would revoke " + a.Accessor
		default:
			if err := e.respond(ctx, *a); err != nil {
				a.Response = "revoke failed: " + err.Error()
			} else {
				a.Response = "revoked " + a.Accessor
			}
		}
	}
	if e.onAlert != nil {
		e.onAlert(*a)
	}
	for _, s := range e.sinks {
		s.Send(*a)
	}
}

// CheckKeys raises rotation-overdue alerts for keys whose automatic
// rotation is late by more than the grace period (called periodically by
// the server; it has no audit record).
func (e *Engine) CheckKeys(ctx context.Context, keys []KeyState, now time.Time) []Alert {
	c := &e.rules.KeyLifecycle
	if c.Disabled {
		return nil
	}
	var out []Alert
	e.mu.Lock()
	for _, k := range keys {
		if k.RotationPeriod <= 0 || k.State != "enabled" {
			continue
		}
		due := k.LastRotated.Add(k.RotationPeriod + time.Duration(c.RotationGrace))
		if now.Before(due) {
			continue
		}
		key := RuleKeyState + "\x00overdue " + k.ID
		if last, ok := e.last[key]; ok && now.Sub(last) < time.Duration(e.rules.RepeatInterval) {
			continue
		}
		forgetIfFull(e.last)
		e.last[key] = now
		out = append(out, Alert{Rule: RuleKeyState, Severity: c.Severity, Time: now, Subject: k.ID,
			Summary: fmt.Sprintf("key %s is overdue for rotation: last rotated %s, period %s", k.ID, k.LastRotated.Format(time.RFC3339), k.RotationPeriod)})
	}
	e.mu.Unlock()
	for i := range out {
		e.deliver(ctx, &out[i], &audit.Record{})
	}
	return out
}

// roll returns the subject's window at t, starting a new one when t is
// past the current window. With baseline set it keeps an exponentially
// weighted average of the counts of past windows (empty ones included).
// maxTracked bounds each map of per-subject state the engine keeps.
const maxTracked = 100000

// forgetIfFull empties m when it holds maxTracked entries: the engine
// forgets everything (and may repeat or miss an alert) rather than grow
// without bound under, say, denied requests from many IPv6 sources.
func forgetIfFull[V any](m map[string]V) {
	if len(m) >= maxTracked {
		clear(m)
	}
}

func roll(m map[string]*window, subj string, t time.Time, d time.Duration, baseline bool) *window {
	w := m[subj]
	if w == nil {
		forgetIfFull(m)
		w = &window{start: t, distinct: map[string]struct{}{}}
		m[subj] = w
		return w
	}
	if t.Sub(w.start) < d {
		return w
	}
	if baseline {
		n := int(t.Sub(w.start) / d)
		for i := 0; i < n && i < 20; i++ {
			c := 0.0
			if i == 0 {
				c = float64(w.count)
			}
			if !w.seenBase {
				w.baseline, w.seenBase = c, true
			} else {
				w.baseline = 0.7*w.baseline + 0.3*c
			}
		}
	}
	w.start, w.count = t, 0
	clear(w.distinct)
	return w
}

func networkOf(addr string, v4, v6 int) (netip.Prefix, error) {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		addr = h
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, err
	}
	ip = ip.Unmap()
	bits := v6
	if ip.Is4() {
		bits = v4
	}
	return ip.Prefix(bits)
}

func (e *Engine) loadLeaked() error {
	c := &e.rules.LeakedCredential
	e.leakAcc, e.leakHMAC = map[string]bool{}, map[string]bool{}
	for _, a := range c.Accessors {
		e.leakAcc[a] = true
	}
	for _, h := range c.TokenHMACs {
		e.leakHMAC[strings.ToLower(h)] = true
	}
	if c.File == "" {
		return nil
	}
	st, err := os.Stat(c.File)
	if os.IsNotExist(err) {
		return nil // the scanner has not reported anything yet
	}
	if err != nil {
		return err
	}
	f, err := os.Open(c.File)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "{"):
			var v struct {
				Accessor  string `json:"accessor"`
				TokenHMAC string `json:"token_hmac"`
			}
			if json.Unmarshal([]byte(line), &v) == nil {
				if v.Accessor != "" {
					e.leakAcc[v.Accessor] = true
				}
				if v.TokenHMAC != "" {
					e.leakHMAC[strings.ToLower(v.TokenHMAC)] = true
				}
			}
		case strings.HasPrefix(line, "hmac:"):
			e.leakHMAC[strings.ToLower(strings.TrimPrefix(line, "hmac:"))] = true
		default:
			e.leakAcc[line] = true
		}
	}
	e.leakMod = st.ModTime()
	return sc.Err()
}

// reloadLeakedLocked rereads the leaked-credentials file when it changed.
func (e *Engine) reloadLeakedLocked() {
	f := e.rules.LeakedCredential.File
	if f == "" {
		return
	}
	st, err := os.Stat(f)
	if err != nil || st.ModTime().Equal(e.leakMod) {
		return
	}
	e.loadLeaked()
}

// observeSeal applies the seal rule to an auto-unseal event.
func (e *Engine) observeSeal(ctx context.Context, r *audit.Record) []Alert {
	c := &e.rules.Seal
	if c.Disabled || r.Outcome == "ok" {
		return nil
	}
	e.mu.Lock()
	key := RuleSeal + "\x00auto-unseal"
	if last, ok := e.last[key]; ok && r.Time.Sub(last) < time.Duration(e.rules.RepeatInterval) {
		e.mu.Unlock()
		return nil
	}
	forgetIfFull(e.last)
	e.last[key] = r.Time
	e.mu.Unlock()
	out := []Alert{{Rule: RuleSeal, Severity: c.Severity, Time: r.Time, Subject: "auto-unseal", Seq: r.Seq,
		Summary: fmt.Sprintf("the %s auto-unseal failed; the server stays sealed: %s", r.Principal.ID, r.Detail)}}
	for i := range out {
		e.deliver(ctx, &out[i], r)
	}
	return out
}
