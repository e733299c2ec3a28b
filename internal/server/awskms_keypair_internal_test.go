package server

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/cofferkms/coffer/internal/keys"
)

// TestKeyPairBusyIsThrottling: a key pair refused because too many are
// being made is ThrottlingException (which the SDKs retry with backoff),
// not KMSInternalException, and is recorded as a 429 that says to retry;
// other errors keep their answer.
func TestKeyPairBusyIsThrottling(t *testing.T) {
	err := keyPairError(fmt.Errorf("pair: %w", keys.ErrKeyPairBusy))
	status, code, msg := classify(err)
	if st, typ := awsError(err, status, code); st != http.StatusBadRequest || typ != "ThrottlingException" {
		t.Fatalf("busy: %d %s, want 400 ThrottlingException", st, typ)
	}
	// Not an internal error in the audit record, the log or the message.
	if status != http.StatusTooManyRequests || msg != keys.ErrKeyPairBusy.Error() {
		t.Fatalf("busy classified %d %s %q", status, code, msg)
	}
	err = keyPairError(keys.ErrDisabled)
	status, code, _ = classify(err)
	if st, typ := awsError(err, status, code); typ != "DisabledException" {
		t.Fatalf("disabled: %d %s", st, typ)
	}
}
