package server

import (
	"strings"
	"testing"
	"time"
)

func TestBatchedSyncConfig(t *testing.T) {
	good := []struct {
		a    AuditConfig
		want time.Duration
	}{
		{AuditConfig{}, 0},
		{AuditConfig{Durability: "per-request"}, 0},
		{AuditConfig{Durability: "batched"}, DefaultBatchedWindow},
		{AuditConfig{Durability: "batched", BatchedWindow: "2ms"}, 2 * time.Millisecond},
		{AuditConfig{Durability: "batched", BatchedWindow: "1s"}, time.Second},
	}
	for _, c := range good {
		got, err := batchedSync(c.a)
		if err != nil || got != c.want {
			t.Errorf("%+v: got %v, %v; want %v", c.a, got, err, c.want)
		}
	}
	bad := []struct {
		a    AuditConfig
		want string
	}{
		{AuditConfig{Durability: "fast"}, "want per-request"},
		{AuditConfig{Durability: "batched", BatchedWindow: "0s"}, "batched_window"},
		{AuditConfig{Durability: "batched", BatchedWindow: "-1ms"}, "batched_window"},
		{AuditConfig{Durability: "batched", BatchedWindow: "1001ms"}, "at most 1s"},
		{AuditConfig{Durability: "batched", BatchedWindow: "soon"}, "batched_window"},
		{AuditConfig{BatchedWindow: "5ms"}, "set durability: batched"},
	}
	for _, c := range bad {
		if _, err := batchedSync(c.a); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error with %q", c.a, err, c.want)
		}
	}
}
