package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// procKB reads a "Name: N kB" field of /proc/PID/status.
func procKB(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestRequestMemoryBounded sends the worst bodies we know to the real
// binary and measures how far each raises the server's peak RSS (VmHWM,
// reset through /proc/PID/clear_refs before each case): no single request,
// from a caller with or without policies, may raise it by 64 MiB or more
// (issue 13, item 6). The figures are in docs/benchmarks.md.
func TestRequestMemoryBounded(t *testing.T) {
	const limit = 64 << 20
	srv := StartServer(t, "--dev", "--dev-dir", t.TempDir(), "--dev-root-token", "memtest", "--listen", "127.0.0.1:0")
	pid := srv.Pid()
	root := newAPI(srv, "memtest")
	root.HC.Timeout = 60 * time.Second
	root.Must(t, "POST", "/v1/keys", client.CreateKeyRequest{Alias: "alias/mem"}, nil)
	var tr client.CreateTokenResponse
	root.Must(t, "POST", "/v1/auth/token/create", client.CreateTokenRequest{DisplayName: "nopol", TTL: "1h"}, &tr)
	nopol := tr.Token

	hc := &http.Client{Timeout: 120 * time.Second}
	send := func(token, path string, body []byte) int {
		req, _ := http.NewRequest("POST", srv.Addr+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return 0 // the server may close on a body it refused early
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	// Bodies, built once.
	var empties bytes.Buffer
	empties.WriteString(`{"items":[{}`)
	for empties.Len() < 16<<20-16 {
		empties.WriteString(`,{}`)
	}
	empties.WriteString(`]}`)
	deep := []byte(`{"items":` + strings.Repeat("[", 16<<20-16))
	var ctxBody bytes.Buffer
	ctxBody.WriteString(`{"key_id":"alias/mem","plaintext":"aGk=","context":{`)
	for i := 0; ctxBody.Len() < 1<<20-64; i++ {
		if i > 0 {
			ctxBody.WriteByte(',')
		}
		fmt.Fprintf(&ctxBody, `"k%d":"v"`, i)
	}
	ctxBody.WriteString(`}}`)
	longString := []byte(`{"key_id":"` + strings.Repeat("k", 1<<20-32) + `"}`)
	// The largest legal encrypt-batch: 64 KiB plaintexts up to 16 MiB.
	pt := make([]byte, 64<<10)
	rand.Read(pt)
	var items []client.EncryptRequest
	for n := 0; n+len(pt)*4/3+64 < 16<<20-1024; n += len(pt)*4/3 + 64 {
		items = append(items, client.EncryptRequest{Plaintext: pt})
	}
	fullEncrypt, _ := json.Marshal(client.BatchEncryptRequest{KeyID: "alias/mem", Items: items})
	// The largest legal decrypt-batch: 1,000 ciphertexts of 12 KiB.
	var er client.EncryptResponse
	root.Must(t, "POST", "/v1/kms/encrypt", client.EncryptRequest{KeyID: "alias/mem", Plaintext: pt[:12<<10]}, &er)
	ct := base64.StdEncoding.EncodeToString(er.Ciphertext)
	var dec bytes.Buffer
	dec.WriteString(`{"items":[`)
	for i := 0; i < 1000 && dec.Len()+len(ct)+32 < 16<<20; i++ {
		if i > 0 {
			dec.WriteByte(',')
		}
		dec.WriteString(`{"ciphertext":"` + ct + `"}`)
	}
	dec.WriteString(`]}`)

	type sendCase struct {
		name, token, path string
		body              []byte
		parallel          int
	}
	cases := []sendCase{
		{"no policies: decrypt-batch, 5.6 M empty items (16 MiB)", nopol, "/v1/kms/decrypt-batch", empties.Bytes(), 1},
		{"no policies: 4 such batches in parallel", nopol, "/v1/kms/decrypt-batch", empties.Bytes(), 4},
		{"no policies: encrypt, 1 MiB context", nopol, "/v1/kms/encrypt", ctxBody.Bytes(), 1},
		{"root: decrypt-batch, 5.6 M empty items", "memtest", "/v1/kms/decrypt-batch", empties.Bytes(), 1},
		{"root: 16 MiB of nested arrays", "memtest", "/v1/kms/decrypt-batch", deep, 1},
		{"root: encrypt, 1 MiB context (~110 k pairs)", "memtest", "/v1/kms/encrypt", ctxBody.Bytes(), 1},
		{"root: encrypt, 1 MiB key id", "memtest", "/v1/kms/encrypt", longString, 1},
		{fmt.Sprintf("root: encrypt-batch, %d x 64 KiB plaintexts (%.1f MiB)", len(items), float64(len(fullEncrypt))/(1<<20)), "memtest", "/v1/kms/encrypt-batch", fullEncrypt, 1},
		{fmt.Sprintf("root: decrypt-batch, 1,000 x 12 KiB ciphertexts (%.1f MiB)", float64(dec.Len())/(1<<20)), "memtest", "/v1/kms/decrypt-batch", dec.Bytes(), 1},
		{"root: 16 full encrypt-batches in parallel", "memtest", "/v1/kms/encrypt-batch", fullEncrypt, 16},
	}
	for _, c := range cases {
		time.Sleep(200 * time.Millisecond)
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Skipf("cannot reset the peak RSS (%v); this test needs Linux >= 4.0", err)
		}
		base := procKB(t, pid, "VmRSS")
		statuses := make([]int, c.parallel)
		var wg sync.WaitGroup
		for i := range c.parallel {
			wg.Go(func() { statuses[i] = send(c.token, c.path, c.body) })
		}
		wg.Wait()
		peak := procKB(t, pid, "VmHWM")
		grew := peak - base
		t.Logf("%-62s statuses %v: peak RSS +%5.1f MiB (base %.1f MiB)", c.name, statuses, float64(grew)/(1<<20), float64(base)/(1<<20))
		if c.parallel == 1 && grew >= limit {
			t.Errorf("%s: peak RSS grew by %.1f MiB, limit 64 MiB", c.name, float64(grew)/(1<<20))
		}
		if c.parallel > 1 && grew >= 5*limit {
			t.Errorf("%s: peak RSS grew by %.1f MiB for %d concurrent requests (the large-body budget should hold it near 4 requests' worth)", c.name, float64(grew)/(1<<20), c.parallel)
		}
		for _, st := range statuses {
			if st >= 500 && st != http.StatusServiceUnavailable {
				t.Errorf("%s: status %d", c.name, st)
			}
		}
	}
}
