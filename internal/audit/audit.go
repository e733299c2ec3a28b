// Package audit is Coffer's tamper-evident, fail-closed audit trail.
//
// Every request produces one Record. A request's effect is returned only
// after its record was accepted by the Recorder: when Record fails, the front
// door answers 503 and returns nothing of the effect (fail closed). Requests
// that change state (key and token lifecycle, init, unseal) also write an
// intent record before the change, so a change can never happen unaudited.
//
// The Trail is the production Recorder. It
//   - turns sensitive identifiers (the presented token, encryption-context
//     values) into HMAC-SHA256 under a per-installation audit key (Keys), so
//     an investigator can ask "was this token used?" without the log holding
//     the token;
//   - chains records: each line carries a sequence number and the SHA-256 of
//     the previous line, and every N records, on rotation and on close it
//     appends a checkpoint signed with Ed25519;
//   - writes with group commit: concurrent records share one write and one
//     fsync, so a saturated server keeps 0.82-0.86 of its throughput without
//     audit (docs/benchmarks.md); a lightly loaded one pays the fsync's
//     latency per request;
//   - mirrors committed lines to best-effort sinks (stdout, webhook) that
//     never block a request.
//
// Verify reads log files as a stream and reports the first missing,
// altered, reordered or truncated record by sequence number. The line format
// is specified in docs/formats.md.
package audit

import (
	"context"
	"time"
)

// Record types.
const (
	TypeRequest    = "request"
	TypeCheckpoint = "checkpoint"
	TypeEvent      = "event" // made by the server itself (alert responses)
)

// Phases of a request record.
const (
	PhaseIntent = "intent" // written before a state change
	PhaseDone   = ""       // the outcome
)

// Principal is who made a request. It names credentials by their
// accessor (not secret) and never holds a token.
type Principal struct {
	Kind           string `json:"kind"` // anonymous, root, token, role, access-key
	ID             string `json:"id,omitempty"`
	Name           string `json:"name,omitempty"`
	Accessor       string `json:"accessor,omitempty"`
	Role           string `json:"role,omitempty"`
	Cluster        string `json:"cluster,omitempty"`
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"service_account,omitempty"`
}

// Record describes one request. It never holds secret values: no
// plaintexts, tokens or key material. Token and ContextValues are inputs
// that the Trail replaces by HMACs before anything is written.
type Record struct {
	Seq  uint64 `json:"seq,omitempty"`
	Prev string `json:"prev,omitempty"`
	Type string `json:"type"`
	// Replica is the replica whose trail holds the record (format 3);
	// the Trail sets it.
	Replica string `json:"replica,omitempty"`

	Time      time.Time `json:"time"`
	RequestID string    `json:"request_id,omitempty"`
	Phase     string    `json:"phase,omitempty"`
	Door      string    `json:"door,omitempty"`
	Source    string    `json:"source,omitempty"`
	Principal Principal `json:"principal"`
	// TokenHMAC is HMAC-SHA256(audit key, presented token), hex.
	TokenHMAC string `json:"token_hmac,omitempty"`
	// CredentialLeaked marks a request that presented a token reported as
	// leaked (coffer scan --report-to); Principal.Accessor names it.
	CredentialLeaked bool   `json:"credential_leaked,omitempty"`
	Action           string `json:"action"`
	Resource         string `json:"resource,omitempty"`
	KeyID            string `json:"key_id,omitempty"`
	Version          uint32 `json:"key_version,omitempty"`
	// Context maps encryption-context keys to HMACs of their values.
	Context   map[string]string `json:"context,omitempty"`
	Outcome   string            `json:"outcome,omitempty"`
	ErrorCode string            `json:"error_code,omitempty"`
	Status    int               `json:"status,omitempty"`
	LatencyNS int64             `json:"latency_ns,omitempty"`
	Detail    string            `json:"detail,omitempty"`
	// Items are the items of a batch request (encrypt-batch,
	// decrypt-batch), in request order: each one's key, version, context
	// and outcome. At most MaxItems; add them with AddItem.
	Items []Item `json:"items,omitempty"`

	// Checkpoint fields.
	Key string `json:"key,omitempty"` // Ed25519 public key, base64
	Sig string `json:"sig,omitempty"` // signature, base64

	// Inputs, never written.
	Token         string            `json:"-"`
	ContextValues map[string]string `json:"-"`
	// Relaxed lets a Trail with Options.BatchedSync acknowledge the
	// record once written, before its fsync: the server sets it on the
	// outcomes of operations that change nothing (docs/audit.md,
	// "Durability").
	Relaxed bool `json:"-"`

	// itemsContextCost is what the items' recorded contexts cost so far
	// (AddItem keeps it under MaxItemsContextBytes).
	itemsContextCost int `json:"-"`
}

// Bounds of a record's batch items.
const (
	// MaxItems is the most items one record holds (a batch's limit).
	MaxItems = 1000
	// MaxItemResource bounds an item's resource; longer ones are cut.
	MaxItemResource = 256
	// MaxItemContextPairs and MaxItemContextBytes bound an item's context
	// (the encryption context's own limits); a larger one is not recorded.
	MaxItemContextPairs = 64
	MaxItemContextBytes = 8192
	// MaxItemsContextBytes bounds the contexts of all of a record's items
	// together, counted as recorded (each key plus its value's HMAC), so a
	// batch of 1,000 denied items with large contexts cannot write
	// megabytes of audit: past it, items keep their key and outcome and
	// are marked context_omitted.
	MaxItemsContextBytes = 32 << 10
)

// itemHMACLen is what one context value costs in a record once hashed (at
// most: the HMAC's encoding plus quotes and separators).
const itemHMACLen = 64 + 6

// Item is one item of a batch request. Its action is the record's: a batch
// holds one kind of operation.
type Item struct {
	// Resource is the key as the item named it (a key id or alias/NAME;
	// for a decryption, the key id its ciphertext names).
	Resource string `json:"resource,omitempty"`
	KeyID    string `json:"key_id,omitempty"`
	Version  uint32 `json:"key_version,omitempty"`
	// Context maps encryption-context keys to HMACs of their values.
	Context   map[string]string `json:"context,omitempty"`
	Outcome   string            `json:"outcome"`
	ErrorCode string            `json:"error_code,omitempty"`
	// ContextOmitted says the item had an encryption context that is not
	// recorded: over an item's limits or the record's (MaxItemsContextBytes).
	ContextOmitted bool `json:"context_omitted,omitempty"`

	// ContextValues is an input the Trail replaces by HMACs (Context).
	ContextValues map[string]string `json:"-"`
}

// AddItem appends it to r's items within the bounds above: past MaxItems
// items it is dropped (false), a longer resource is cut, and a context
// over the limits is left out.
func (r *Record) AddItem(it Item) bool {
	if len(r.Items) >= MaxItems {
		return false
	}
	if len(it.Resource) > MaxItemResource {
		it.Resource = it.Resource[:MaxItemResource]
	}
	it.Context, it.ContextOmitted = nil, false
	if len(it.ContextValues) > 0 {
		n, cost := 0, 0
		for k, v := range it.ContextValues {
			n += len(k) + len(v)
			cost += len(k) + itemHMACLen
		}
		if len(it.ContextValues) > MaxItemContextPairs || n > MaxItemContextBytes || r.itemsContextCost+cost > MaxItemsContextBytes {
			it.ContextValues, it.ContextOmitted = nil, true
		} else {
			r.itemsContextCost += cost
		}
	}
	r.Items = append(r.Items, it)
	return true
}

// hashItems replaces the context values of r's items by their HMACs.
func (r *Record) hashItems(sum func(string) string) {
	for i := range r.Items {
		it := &r.Items[i]
		if len(it.ContextValues) > 0 {
			it.Context = make(map[string]string, len(it.ContextValues))
			for k, v := range it.ContextValues {
				it.Context[k] = sum(v)
			}
		}
		it.ContextValues = nil
	}
}

// Recorder persists records durably before Record returns.
type Recorder interface {
	Record(ctx context.Context, r *Record) error
}

// Nop accepts every record and keeps none.
type Nop struct{}

// Record implements Recorder.
func (Nop) Record(_ context.Context, r *Record) error {
	r.Token, r.ContextValues = "", nil
	for i := range r.Items {
		r.Items[i].ContextValues = nil
	}
	return nil
}
