package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// SnapshotInfo describes a storage snapshot the server took.
type SnapshotInfo struct {
	// Revision is the store revision of the snapshot's consistent view.
	Revision int64 `json:"revision"`
	// Entries is the number of storage entries it holds.
	Entries uint64 `json:"entries"`
	// Bytes is the size of the snapshot file.
	Bytes int64 `json:"bytes"`
	// Checksum is the SHA-256 in the file's trailer, in hex.
	Checksum string `json:"checksum"`
}

// SnapshotStream is the body of a snapshot being downloaded. Close it.
type SnapshotStream struct {
	io.ReadCloser
	// Size is the length the server announced, or -1.
	Size int64
	// Checksum is the SHA-256 the server announced for the file, in hex.
	// The file's own trailer holds it too; a reader checks that one.
	Checksum string
}

// Snapshot downloads a snapshot of the server's whole store (GET
// /v1/sys/storage/snapshot; action sys:Snapshot, an operator action). The
// stream is a snapshot file (docs/snapshot-format.md): every storage entry
// of one consistent view, still barrier-encrypted, ending with a checksum.
// A download cut short is a truncated file: verify it before keeping it
// (`coffer operator snapshot save` does). With several endpoints, the
// preferred one is asked, without failover.
func (c *Client) Snapshot(ctx context.Context) (*SnapshotStream, error) {
	const path = "/v1/sys/storage/snapshot"
	if ctx == nil {
		return nil, fmt.Errorf("client: nil context")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Address()+path, nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	authz, err := c.AuthorizationHeader(ctx)
	if err != nil {
		return nil, err
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	req.Header.Set("Accept", "application/vnd.coffer.snapshot, application/json")
	if c.door != "" {
		req.Header.Set("X-Coffer-Door", c.door)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(http.MethodGet, path, resp)
	}
	return &SnapshotStream{ReadCloser: resp.Body, Size: resp.ContentLength, Checksum: resp.Header.Get("X-Coffer-Snapshot-Sha256")}, nil
}
