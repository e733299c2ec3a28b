package keys

import (
	"encoding/json"
	"testing"
)

// TestStoredRecordsUnchanged: a key record and an alias record as the code
// before the key service had its own types (it used the client's KeyState)
// wrote them still decode, and encode again to the same bytes.
func TestStoredRecordsUnchanged(t *testing.T) {
	for _, c := range []struct {
		name string
		raw  string
		v    any
	}{
		{"key", `{"id":"0b6c1c54-3f1e-4d59-9a4e-1f2d3c4b5a69","description":"payments","state":"PendingDeletion",` +
			`"created_at":"2026-01-01T00:00:00Z","rotation_period":7776000000000000,"last_rotated_at":"2026-02-01T10:20:30.123456789Z",` +
			`"deletion_date":"2026-03-03T00:00:00Z","tags":{"team":"x"},"primary":2,"versions":[` +
			`{"version":1,"created_at":"2026-01-01T00:00:00Z","material":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=","uses_reserved":65536},` +
			`{"version":2,"created_at":"2026-02-01T10:20:30.123456789Z"}]}`, &record{}},
		{"minimal key", `{"id":"k","state":"Enabled","created_at":"2026-01-01T00:00:00Z","last_rotated_at":"2026-01-01T00:00:00Z","primary":1,"versions":[]}`, &record{}},
		{"alias", `{"key_id":"0b6c1c54-3f1e-4d59-9a4e-1f2d3c4b5a69"}`, &aliasRecord{}},
	} {
		if err := json.Unmarshal([]byte(c.raw), c.v); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		out, err := json.Marshal(c.v)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(out) != c.raw {
			t.Errorf("%s: re-encoded as\n%s\nnot\n%s", c.name, out, c.raw)
		}
	}
	var r record
	if err := json.Unmarshal([]byte(`{"state":"Disabled"}`), &r); err != nil || r.State != StateDisabled {
		t.Fatalf("state decoded as %q (%v), want %q", r.State, err, StateDisabled)
	}
}
