package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/cofferkms/coffer/internal/storage/etcd"
)

// TestClassifyUnavailable: an unreachable etcd is a 503 with its own code,
// and the client never sees the cause (endpoints, gRPC detail).
func TestClassifyUnavailable(t *testing.T) {
	err := fmt.Errorf("keys: create: %w", fmt.Errorf("%w: etcd transaction: dial tcp 10.1.2.3:2379: connection refused", etcd.ErrUnavailable))
	status, code, msg := classify(err)
	if status != http.StatusServiceUnavailable || code != "storage_unavailable" {
		t.Errorf("classify = %d %s, want 503 storage_unavailable", status, code)
	}
	if strings.Contains(msg, "10.1.2.3") {
		t.Errorf("message %q shows the cause to the client", msg)
	}
}
