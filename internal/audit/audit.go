// Package audit defines the audit record and the hook every request passes
// through. A request's effect is returned only after its record was accepted
// by the Recorder: when Record fails, the front door answers 503 and returns
// nothing of the effect (fail closed).
//
// This release ships only Nop; the tamper-evident file sink plugs in here.
package audit

import (
	"context"
	"time"
)

// Record describes one request. It never holds secret values: no
// plaintexts, tokens or key material.
type Record struct {
	Time      time.Time     `json:"time"`
	RequestID string        `json:"request_id"`
	Door      string        `json:"door"`
	Source    string        `json:"source"`
	Accessor  string        `json:"accessor,omitempty"`
	Action    string        `json:"action"`
	Resource  string        `json:"resource,omitempty"`
	KeyID     string        `json:"key_id,omitempty"`
	Version   uint32        `json:"key_version,omitempty"`
	Outcome   string        `json:"outcome"`
	ErrorCode string        `json:"error_code,omitempty"`
	Latency   time.Duration `json:"latency_ns"`
}

// Recorder persists records durably before Record returns.
type Recorder interface {
	Record(ctx context.Context, r *Record) error
}

// Nop accepts every record and keeps none.
type Nop struct{}

// Record implements Recorder.
func (Nop) Record(context.Context, *Record) error { return nil }
