// Package loadgen runs a closed-loop HTTP load against Coffer's KMS API (its
// own REST door, or the AWS KMS and Vault-compatible doors). It is
// the engine behind `coffer bench`.
//
// A fixed number of workers each send one request, wait for the whole answer
// and send the next, until a duration passes or a total request count is
// reached. Every request of a run carries the same JSON body, built once up
// front from the client wire types, so the generator spends as little CPU as
// possible per request: on a small machine it shares the cores with the
// server it measures.
package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/cofferkms/coffer/client"
)

// Op names the API operation a run loads.
type Op string

// The supported operations. Each maps to one POST route under /v1/kms.
const (
	// OpEncrypt loads POST /v1/kms/encrypt with PayloadSize bytes of
	// plaintext.
	OpEncrypt Op = "encrypt"
	// OpDecrypt loads POST /v1/kms/decrypt with the ciphertext of one
	// PayloadSize plaintext, made by a single encrypt call before the run.
	OpDecrypt Op = "decrypt"
	// OpEncryptBatch loads POST /v1/kms/encrypt-batch with BatchSize items of
	// PayloadSize bytes each.
	OpEncryptBatch Op = "encrypt-batch"
	// OpDecryptBatch loads POST /v1/kms/decrypt-batch with BatchSize copies
	// of one ciphertext, made by a single encrypt call before the run.
	OpDecryptBatch Op = "decrypt-batch"
	// OpDataKey loads POST /v1/kms/datakey asking for PayloadSize-byte data
	// keys (1..1024).
	OpDataKey Op = "datakey"
	// OpRandom loads POST /v1/kms/random asking for PayloadSize random bytes
	// (1..1024). It needs no key.
	OpRandom Op = "random"
	// OpSecretGet loads GET /v1/secrets/data/NAME: the current version of
	// one secret of one PayloadSize field, written under KeyID before the
	// run (NAME is BenchSecretName).
	OpSecretGet Op = "secret-get"
)

// BenchSecretName is the secret the secret-get operation writes and reads.
const BenchSecretName = "coffer-bench/secret-get"

// AllOps lists the supported operations in a stable order, for help texts.
func AllOps() []Op {
	return []Op{OpEncrypt, OpDecrypt, OpEncryptBatch, OpDecryptBatch, OpDataKey, OpRandom, OpSecretGet}
}

// Route is the API path the operation posts to, for example
// "/v1/kms/encrypt". It is empty for an unknown operation.
func (o Op) Route() string {
	switch o {
	case OpEncrypt, OpDecrypt, OpEncryptBatch, OpDecryptBatch, OpDataKey, OpRandom:
		return "/v1/kms/" + string(o)
	case OpSecretGet:
		return "/v1/secrets/data/" + BenchSecretName
	}
	return ""
}

// Method is the HTTP method of the operation's requests.
func (o Op) Method() string {
	if o == OpSecretGet {
		return http.MethodGet
	}
	return http.MethodPost
}

// Batched reports whether one request of the operation carries BatchSize
// items.
func (o Op) Batched() bool { return o == OpEncryptBatch || o == OpDecryptBatch }

// NeedsKey reports whether the operation needs Config.KeyID.
func (o Op) NeedsKey() bool { return o != OpRandom && o.Route() != "" }

// Defaults applied by Run to zero Config fields.
const (
	// DefaultPayloadSize is the default Config.PayloadSize, in bytes.
	DefaultPayloadSize = 32
	// DefaultBatchSize is the default Config.BatchSize.
	DefaultBatchSize = 100
	// DefaultConcurrency is the default Config.Concurrency.
	DefaultConcurrency = 32
	// DefaultDuration is the default Config.Duration when Requests is zero
	// too.
	DefaultDuration = 10 * time.Second
)

// Config describes one load run. Zero fields take the defaults above.
type Config struct {
	// Target is the server's base URL, "http://host:port" or
	// "https://host:port", optionally with a path prefix.
	Target string
	// Token is sent as "Authorization: Bearer <Token>" when not empty.
	Token string
	// Authorization, when not empty, is the whole Authorization header
	// (a role's session token or an access key's Basic credentials) and
	// takes precedence over Token.
	Authorization string
	// Op is the operation to load.
	Op Op
	// KeyID is the key id or alias ("alias/NAME") the operation uses. All
	// operations but random need it.
	KeyID string
	// Context is the encryption context of encrypt, decrypt, datakey and
	// the batch operations' items (nil: none).
	Context map[string]string
	// PayloadSize is the plaintext size of encrypt, decrypt and the batch
	// operations, and the requested size for datakey and random. Default 32.
	PayloadSize int
	// BatchSize is the number of items per request of the batch operations.
	// Default 100; ignored by the other operations.
	BatchSize int
	// Concurrency is the number of workers, each with one request in flight.
	// Default 32.
	Concurrency int
	// Duration bounds the measured phase. When both Duration and Requests
	// are zero it defaults to 10s; when only Requests is set the run has no
	// time bound.
	Duration time.Duration
	// Requests bounds the number of requests (successful or not) of the
	// measured phase; zero means no bound. The run ends at whichever of
	// Duration and Requests is reached first. The bound is exact.
	Requests int64
	// Warmup runs the same load for this long before the measured phase and
	// discards its statistics. It opens connections and warms caches.
	Warmup time.Duration
	// CAFile is a PEM file of CA certificates to trust for an https Target,
	// instead of the system roots.
	CAFile string
	// InsecureSkipVerify turns off verification of the server's certificate.
	InsecureSkipVerify bool
	// HTTP1 speaks HTTP/1.1 over TLS, one connection per worker, instead
	// of HTTP/2 (what many load generators and clients do).
	HTTP1 bool
	// Door is the API the run speaks (default DoorREST). The compatible
	// doors load OpEncrypt and OpDecrypt only.
	Door Door
	// AWSAccessKeyID and AWSSecretAccessKey are the Coffer access key
	// DoorAWSKMS signs every request with.
	AWSAccessKeyID     string
	AWSSecretAccessKey string
	// AWSRegion is the region of the signatures' credential scope (default
	// DefaultAWSRegion); it must be the server's.
	AWSRegion string
	// VaultMount is the transit mount of DoorVault (default
	// DefaultVaultMount).
	VaultMount string
}

// Latency summarises the latencies of the successful requests of a run. A
// request's latency runs from just before it is sent until its answer has
// been read completely.
type Latency struct {
	// Min and Max are the fastest and the slowest request.
	Min time.Duration `json:"min_ns"`
	// Mean is the arithmetic mean.
	Mean time.Duration `json:"mean_ns"`
	// P50, P90, P99 and P999 are nearest-rank percentiles: the latency that
	// 50%, 90%, 99% and 99.9% of the requests did not exceed.
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

// Result is the outcome of the measured phase of a run. Durations are in
// nanoseconds in JSON.
type Result struct {
	// Op, Door, Target, Concurrency, PayloadSize and BatchSize echo the
	// configuration (BatchSize only for batch operations).
	Op          Op     `json:"op"`
	Door        Door   `json:"door"`
	Target      string `json:"target"`
	Concurrency int    `json:"concurrency"`
	PayloadSize int    `json:"payload_size"`
	BatchSize   int    `json:"batch_size,omitempty"`
	// Protocol is the HTTP version the server answered with, for example
	// "HTTP/2.0".
	Protocol string `json:"protocol,omitempty"`
	// Ops counts successful requests: a 2xx answer read completely, and for
	// the batch operations without any failed item.
	Ops int64 `json:"ops"`
	// Items is Ops times the batch size (Ops for the other operations).
	Items int64 `json:"items"`
	// Errors counts failed requests: transport errors, non-2xx answers and
	// batch answers with a failed item.
	Errors int64 `json:"errors"`
	// FirstError describes the first failure, if any.
	FirstError string `json:"first_error,omitempty"`
	// Elapsed is the wall time of the measured phase, up to the end of the
	// last request.
	Elapsed time.Duration `json:"elapsed_ns"`
	// OpsPerSec is Ops per second of Elapsed.
	OpsPerSec float64 `json:"ops_per_sec"`
	// ItemsPerSec is Items per second of Elapsed.
	ItemsPerSec float64 `json:"items_per_sec"`
	// Latency summarises the latencies of the successful requests.
	Latency Latency `json:"latency"`
}

// WriteTable prints the result as a human-readable table.
func (r Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	proto := r.Protocol
	if proto == "" {
		proto = "-"
	}
	fmt.Fprintf(tw, "op\t%s\n", r.Op)
	if r.Door != "" && r.Door != DoorREST {
		fmt.Fprintf(tw, "door\t%s\n", r.Door)
	}
	fmt.Fprintf(tw, "target\t%s (%s)\n", r.Target, proto)
	if r.BatchSize > 0 {
		fmt.Fprintf(tw, "load\t%d workers, %d items of %d bytes per request\n", r.Concurrency, r.BatchSize, r.PayloadSize)
	} else {
		fmt.Fprintf(tw, "load\t%d workers, %d bytes per request\n", r.Concurrency, r.PayloadSize)
	}
	fmt.Fprintf(tw, "elapsed\t%s\n", r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(tw, "requests\t%d ok, %d errors\n", r.Ops, r.Errors)
	fmt.Fprintf(tw, "ops/s\t%.1f\n", r.OpsPerSec)
	if r.BatchSize > 0 {
		fmt.Fprintf(tw, "items/s\t%.1f\n", r.ItemsPerSec)
	}
	if l := r.Latency; r.Ops > 0 {
		fmt.Fprintf(tw, "latency\tmin %s  mean %s  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
			fmtDur(l.Min), fmtDur(l.Mean), fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max))
	} else {
		fmt.Fprintf(tw, "latency\t-\n")
	}
	if r.FirstError != "" {
		fmt.Fprintf(tw, "first error\t%s\n", r.FirstError)
	}
	return tw.Flush()
}

// fmtDur rounds a latency to three significant digits or so.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond / 10).String()
	}
}

// Validate reports whether Run would accept c, without contacting the
// server.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Op == "" {
		c.Op = OpEncrypt
	}
	if c.Op.Route() == "" {
		return c, fmt.Errorf("unknown op %q (want one of %s)", c.Op, opList())
	}
	if _, err := c.baseURL(); err != nil {
		return c, err
	}
	if c.Op.NeedsKey() && c.KeyID == "" {
		return c, fmt.Errorf("op %s needs a key id", c.Op)
	}
	if c.PayloadSize == 0 {
		c.PayloadSize = DefaultPayloadSize
	}
	if c.PayloadSize < 1 {
		return c, fmt.Errorf("payload size %d: must be at least 1", c.PayloadSize)
	}
	if (c.Op == OpDataKey || c.Op == OpRandom) && c.PayloadSize > 1024 {
		return c, fmt.Errorf("payload size %d: op %s allows 1..1024 bytes", c.PayloadSize, c.Op)
	}
	if c.Op == OpSecretGet && c.PayloadSize > 65531 {
		return c, fmt.Errorf("payload size %d: op %s allows 1..65531 bytes (one field of a 64 KiB version)", c.PayloadSize, c.Op)
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchSize < 1 {
		return c, fmt.Errorf("batch size %d: must be at least 1", c.BatchSize)
	}
	if !c.Op.Batched() {
		c.BatchSize = 1
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 1 {
		return c, fmt.Errorf("concurrency %d: must be at least 1", c.Concurrency)
	}
	if c.Duration < 0 || c.Requests < 0 || c.Warmup < 0 {
		return c, errors.New("duration, requests and warmup must not be negative")
	}
	if c.Duration == 0 && c.Requests == 0 {
		c.Duration = DefaultDuration
	}
	if c.Door == "" {
		c.Door = DoorREST
	}
	if c.AWSRegion == "" {
		c.AWSRegion = DefaultAWSRegion
	}
	if c.VaultMount == "" {
		c.VaultMount = DefaultVaultMount
	}
	if err := c.checkDoor(); err != nil {
		return c, err
	}
	return c, nil
}

func opList() string {
	var names []string
	for _, o := range AllOps() {
		names = append(names, string(o))
	}
	return strings.Join(names, ", ")
}

// baseURL is Target checked and without a trailing slash.
func (c Config) baseURL() (string, error) {
	if c.Target == "" {
		return "", errors.New("no target address")
	}
	u, err := url.Parse(c.Target)
	if err != nil {
		return "", fmt.Errorf("target %q: %w", c.Target, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("target %q: scheme must be http or https", c.Target)
	}
	if u.Host == "" {
		return "", fmt.Errorf("target %q: no host", c.Target)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("target %q: must not have credentials, a query or a fragment", c.Target)
	}
	return strings.TrimRight(c.Target, "/"), nil
}

// newHTTPClient builds the client of a run: Go's default transport with
// keep-alive for every worker, HTTP/2 over TLS (HTTP/1.1 with c.HTTP1) and
// no compression.
func (c Config) newHTTPClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	tr.DisableCompression = true
	conc := max(c.Concurrency, 1)
	tr.MaxIdleConns = max(tr.MaxIdleConns, 2*conc)
	tr.MaxIdleConnsPerHost = conc
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate found", c.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	if c.HTTP1 {
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		tlsConf.NextProtos = []string{"http/1.1"}
	}
	tr.TLSClientConfig = tlsConf
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// setHeaders sets the headers every request of a run carries.
func (c Config) setHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	switch {
	case c.Authorization != "":
		h.Set("Authorization", c.Authorization)
	case c.Token != "":
		h.Set("Authorization", "Bearer "+c.Token)
	}
}

// postJSON sends one JSON request outside the measured loop and decodes a
// 2xx answer into out.
func (c Config) postJSON(ctx context.Context, hc *http.Client, path string, in, out any) error {
	return c.sendJSON(ctx, hc, http.MethodPost, path, in, out)
}

// sendJSON sends one request of the REST API outside the measured loop,
// with the JSON of in as its body (none when in is nil), and decodes a 2xx
// answer into out (when not nil).
func (c Config) sendJSON(ctx context.Context, hc *http.Client, method, path string, in, out any) error {
	base, err := c.baseURL()
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	c.setHeaders(req.Header)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, path, describeFailure(resp.Status, data))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return nil
}

// describeFailure turns a non-2xx answer into one line, using the API's error
// body when there is one.
func describeFailure(status string, body []byte) string {
	if s, ok := describeDoorFailure(status, body); ok {
		return s
	}
	var eb client.ErrorBody
	if json.Unmarshal(body, &eb) == nil && (eb.Error.Code != "" || eb.Error.Message != "") {
		return fmt.Sprintf("%s: %s: %s", status, eb.Error.Code, eb.Error.Message)
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		return status
	}
	return status + ": " + s
}

// CreateKey creates a key with POST /v1/keys on cfg's target, using cfg's
// token and TLS settings, and returns its metadata.
func CreateKey(ctx context.Context, cfg Config, req client.CreateKeyRequest) (client.Key, error) {
	var key client.Key
	hc, err := cfg.newHTTPClient()
	if err != nil {
		return key, err
	}
	defer hc.CloseIdleConnections()
	if err := cfg.postJSON(ctx, hc, "/v1/keys", req, &key); err != nil {
		return key, err
	}
	if key.ID == "" {
		return key, errors.New("POST /v1/keys: the answer has no key id")
	}
	return key, nil
}

// ScheduleKeyDeletion schedules the deletion of a key with
// POST /v1/keys/{key}/schedule-deletion after pendingDays (7..30; 0 means the
// server's default).
func ScheduleKeyDeletion(ctx context.Context, cfg Config, keyID string, pendingDays int) error {
	hc, err := cfg.newHTTPClient()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	return cfg.postJSON(ctx, hc, "/v1/keys/"+url.PathEscape(keyID)+"/schedule-deletion",
		client.ScheduleDeletionRequest{PendingDays: pendingDays}, nil)
}

// payload returns n deterministic pseudo-random bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(0xC0FFE5, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// buildBody makes the JSON body every request of the run carries. For the
// decrypt operations it encrypts one payload first.
func buildBody(ctx context.Context, hc *http.Client, c Config) ([]byte, error) {
	pt := payload(c.PayloadSize)
	var ct []byte
	if c.Op == OpDecrypt || c.Op == OpDecryptBatch {
		var er client.EncryptResponse
		if err := c.postJSON(ctx, hc, OpEncrypt.Route(), client.EncryptRequest{KeyID: c.KeyID, Plaintext: pt, Context: c.Context}, &er); err != nil {
			return nil, fmt.Errorf("preparing a ciphertext to decrypt: %w", err)
		}
		if len(er.Ciphertext) == 0 {
			return nil, errors.New("preparing a ciphertext to decrypt: the encrypt answer has no ciphertext")
		}
		ct = er.Ciphertext
	}
	var v any
	switch c.Op {
	case OpEncrypt:
		v = client.EncryptRequest{KeyID: c.KeyID, Plaintext: pt, Context: c.Context}
	case OpDecrypt:
		v = client.DecryptRequest{Ciphertext: ct, Context: c.Context}
	case OpEncryptBatch:
		items := make([]client.EncryptRequest, c.BatchSize)
		for i := range items {
			items[i] = client.EncryptRequest{Plaintext: pt, Context: c.Context}
		}
		v = client.BatchEncryptRequest{KeyID: c.KeyID, Items: items}
	case OpDecryptBatch:
		items := make([]client.DecryptRequest, c.BatchSize)
		for i := range items {
			items[i] = client.DecryptRequest{Ciphertext: ct, Context: c.Context}
		}
		v = client.BatchDecryptRequest{Items: items}
	case OpDataKey:
		v = client.DataKeyRequest{KeyID: c.KeyID, Bytes: c.PayloadSize, Context: c.Context}
	case OpRandom:
		v = client.RandomRequest{Bytes: c.PayloadSize}
	case OpSecretGet:
		// One field of PayloadSize characters (text: base64 of the
		// payload, cut to size), written once; the run sends no body.
		val := base64.StdEncoding.EncodeToString(payload(c.PayloadSize))[:c.PayloadSize]
		put := client.SecretPutRequest{Fields: map[string]string{"value": val}, Key: c.KeyID}
		if err := c.postJSON(ctx, hc, OpSecretGet.Route(), put, nil); err != nil {
			return nil, fmt.Errorf("preparing the secret to read: %w", err)
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown op %q", c.Op)
	}
	return json.Marshal(v)
}

// Run runs the load described by cfg: an optional warmup, then the measured
// phase, and returns the statistics of the measured phase. It returns an
// error without a result when the configuration is invalid or the
// preparation fails. When ctx ends early it returns the statistics so far
// together with ctx's error.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	base, _ := cfg.baseURL()
	hc, err := cfg.newHTTPClient()
	if err != nil {
		return Result{}, err
	}
	defer hc.CloseIdleConnections()

	var body []byte
	if cfg.Door == DoorREST {
		body, err = buildBody(ctx, hc, cfg)
	} else {
		body, err = buildDoorBody(ctx, hc, cfg)
	}
	if err != nil {
		return Result{}, err
	}
	tmpl, err := http.NewRequestWithContext(ctx, cfg.Op.Method(), base+cfg.doorPath(cfg.Op), nil)
	if err != nil {
		return Result{}, err
	}
	cfg.setDoorHeaders(tmpl.Header, cfg.Op)
	if body != nil {
		tmpl.ContentLength = int64(len(body))
		tmpl.GetBody = func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(body)), nil
		}
	}

	sh := &shared{route: cfg.Op.Method() + " " + cfg.doorPath(cfg.Op)}
	if cfg.Door == DoorAWSKMS {
		sh.route = "POST / " + tmpl.Header.Get("X-Amz-Target")
	}
	ws := make([]*worker, cfg.Concurrency)
	latCap := latencyCap(cfg)
	for i := range ws {
		ws[i] = &worker{
			hc:      hc,
			tmpl:    tmpl,
			data:    body,
			body:    newReqBody(),
			batched: cfg.Op.Batched(),
			signer:  cfg.newSigner(body),
			shared:  sh,
			lat:     make([]time.Duration, 0, latCap),
		}
	}

	if cfg.Warmup > 0 {
		runPhase(ctx, ws, cfg.Warmup, 0, false)
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		sh.reset()
	}
	start := time.Now()
	runPhase(ctx, ws, cfg.Duration, cfg.Requests, true)
	elapsed := time.Since(start)

	res := summarize(cfg, base, ws, sh, elapsed)
	return res, ctx.Err()
}

// latencyCap is the initial capacity of each worker's latency slice: enough
// for the whole run when Requests bounds it, else for a brisk rate; append
// grows it beyond that.
func latencyCap(c Config) int {
	const most = 1 << 18
	n := most
	if c.Duration > 0 {
		n = min(n, max(1024, int(c.Duration.Seconds()*2000)))
	}
	if c.Requests > 0 {
		per := (c.Requests + int64(c.Concurrency) - 1) / int64(c.Concurrency)
		n = int(min(int64(n), per))
	}
	return n
}

// phase is the shared state of the workers during one phase of a run.
type phase struct {
	stop    atomic.Bool
	limited bool
	budget  atomic.Int64
	record  bool
}

// runPhase runs all workers until d passes (d > 0), requests have been sent
// (requests > 0) or ctx ends.
func runPhase(ctx context.Context, ws []*worker, d time.Duration, requests int64, record bool) {
	p := &phase{record: record, limited: requests > 0}
	p.budget.Store(requests)
	if d > 0 {
		t := time.AfterFunc(d, func() { p.stop.Store(true) })
		defer t.Stop()
	}
	stopOnCancel := context.AfterFunc(ctx, func() { p.stop.Store(true) })
	defer stopOnCancel()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.loop(ctx, p) })
	}
	wg.Wait()
}

// shared holds what the workers of a run share besides the phase: the first
// failure.
type shared struct {
	route    string
	hasFirst atomic.Bool
	mu       sync.Mutex
	first    string
}

// noteFailure keeps msg() as the first failure if there is none yet. msg is
// only called then, so a failing server costs the loop little.
func (s *shared) noteFailure(msg func() string) {
	if s.hasFirst.Load() {
		return
	}
	m := msg()
	s.mu.Lock()
	if s.first == "" {
		s.first = m
		s.hasFirst.Store(true)
	}
	s.mu.Unlock()
}

func (s *shared) reset() {
	s.mu.Lock()
	s.first = ""
	s.hasFirst.Store(false)
	s.mu.Unlock()
}

// reqBody is a worker's request body, reused for every request. The
// transport closes a request body when it is done with it, possibly in
// another goroutine after the answer has arrived; the worker waits for that
// Close before rewinding the body for the next request.
type reqBody struct {
	r      bytes.Reader
	closed atomic.Bool
	done   chan struct{} // gets one value per Close after rearm
}

func newReqBody() *reqBody { return &reqBody{done: make(chan struct{}, 1)} }

// Read implements io.Reader.
func (b *reqBody) Read(p []byte) (int, error) { return b.r.Read(p) }

// WriteTo implements io.WriterTo, saving a copy buffer.
func (b *reqBody) WriteTo(w io.Writer) (int64, error) { return b.r.WriteTo(w) }

// Close implements io.Closer; only the first Close after a rearm counts.
func (b *reqBody) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		b.done <- struct{}{}
	}
	return nil
}

// bodyCloseWait bounds how long a worker waits for the transport to close the
// previous request body before giving up on reusing it.
const bodyCloseWait = 5 * time.Second

// worker is one closed loop of requests.
type worker struct {
	hc      *http.Client
	tmpl    *http.Request
	data    []byte
	body    *reqBody
	armed   bool // body is in use by a request that may not be closed yet
	batched bool
	signer  *signer // signs each request of the aws-kms door
	shared  *shared
	buf     bytes.Buffer
	lat     []time.Duration
	ops     int64
	errs    int64
	proto   string
}

// loop sends requests until the phase stops.
func (w *worker) loop(ctx context.Context, p *phase) {
	for !p.stop.Load() {
		if p.limited && p.budget.Add(-1) < 0 {
			return
		}
		lat, ok := w.do()
		if !p.record {
			continue
		}
		if ok {
			w.ops++
			w.lat = append(w.lat, lat)
		} else if ctx.Err() == nil {
			w.errs++
		}
	}
	w.release()
}

// release waits for the transport to be done with the body.
func (w *worker) release() {
	if !w.armed {
		return
	}
	w.armed = false
	select {
	case <-w.body.done:
		return
	default:
	}
	t := time.NewTimer(bodyCloseWait)
	defer t.Stop()
	select {
	case <-w.body.done:
	case <-t.C:
		// The transport still holds it: leave it be and use a fresh one,
		// and fresh signed headers and URL (the signer reuses them).
		w.body = newReqBody()
		if w.signer != nil {
			fresh := *w.signer
			fresh.hdr = nil
			w.signer = &fresh
		}
	}
}

// itemErrorMarker appears in a batch answer only when an item failed: base64
// data and key ids never contain a quote.
var itemErrorMarker = []byte(`"error"`)

// do sends one request and reads the whole answer. It reports the latency
// and whether the request succeeded.
func (w *worker) do() (time.Duration, bool) {
	w.release()
	req := new(http.Request)
	*req = *w.tmpl
	if w.data != nil {
		b := w.body
		b.r.Reset(w.data)
		b.closed.Store(false)
		w.armed = true
		req.Body = b
	}

	start := time.Now()
	if w.signer != nil {
		// Signing is part of the request's cost to the client, so it
		// is inside the latency.
		if err := w.signer.sign(req); err != nil {
			w.shared.noteFailure(func() string { return "signing: " + err.Error() })
			return 0, false
		}
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		if req.Context().Err() == nil { // not a failure when the run is cancelled
			w.shared.noteFailure(func() string { return err.Error() })
		}
		return 0, false
	}
	w.buf.Reset()
	_, rerr := w.buf.ReadFrom(resp.Body)
	resp.Body.Close()
	lat := time.Since(start)
	if w.proto == "" {
		w.proto = resp.Proto
	}
	if rerr != nil {
		if req.Context().Err() != nil {
			return 0, false
		}
		w.shared.noteFailure(func() string { return w.shared.route + ": reading answer: " + rerr.Error() })
		return 0, false
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		w.shared.noteFailure(func() string {
			return w.shared.route + ": " + describeFailure(resp.Status, w.buf.Bytes())
		})
		return 0, false
	}
	if w.batched && bytes.Contains(w.buf.Bytes(), itemErrorMarker) {
		w.shared.noteFailure(func() string {
			return w.shared.route + ": " + describeItemFailure(w.buf.Bytes())
		})
		return 0, false
	}
	return lat, true
}

// describeItemFailure names the first failed item of a batch answer.
func describeItemFailure(body []byte) string {
	var r struct {
		Results []struct {
			Error *client.Error `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &r); err == nil {
		for i, it := range r.Results {
			if it.Error != nil {
				return fmt.Sprintf("item %d of %d failed: %s: %s", i, len(r.Results), it.Error.Code, it.Error.Message)
			}
		}
	}
	return "a batch item failed"
}

// summarize merges the workers' statistics.
func summarize(c Config, base string, ws []*worker, sh *shared, elapsed time.Duration) Result {
	res := Result{
		Op:          c.Op,
		Door:        c.Door,
		Target:      base,
		Concurrency: c.Concurrency,
		PayloadSize: c.PayloadSize,
		Elapsed:     elapsed,
	}
	if c.Op.Batched() {
		res.BatchSize = c.BatchSize
	}
	n := 0
	for _, w := range ws {
		res.Ops += w.ops
		res.Errors += w.errs
		n += len(w.lat)
		if res.Protocol == "" {
			res.Protocol = w.proto
		}
	}
	res.Items = res.Ops * int64(c.BatchSize)
	sh.mu.Lock()
	res.FirstError = sh.first
	sh.mu.Unlock()
	if secs := elapsed.Seconds(); secs > 0 {
		res.OpsPerSec = float64(res.Ops) / secs
		res.ItemsPerSec = float64(res.Items) / secs
	}
	if n == 0 {
		return res
	}
	all := make([]time.Duration, 0, n)
	for _, w := range ws {
		all = append(all, w.lat...)
	}
	slices.Sort(all)
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	res.Latency = Latency{
		Min:  all[0],
		Mean: sum / time.Duration(len(all)),
		P50:  percentile(all, 0.50),
		P90:  percentile(all, 0.90),
		P99:  percentile(all, 0.99),
		P999: percentile(all, 0.999),
		Max:  all[len(all)-1],
	}
	return res
}

// percentile returns the nearest-rank q-quantile of sorted, which must not be
// empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
