package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// firstRead signals once its reader is first read from.
type firstRead struct {
	r    io.Reader
	read chan struct{}
	once bool
}

func (f *firstRead) Read(p []byte) (int, error) {
	if !f.once {
		f.once = true
		close(f.read)
	}
	return f.r.Read(p)
}

// An AWS KMS door body is read before its signature is checked, so a
// caller without any credential makes the server hold it. Such a body must
// not take a share of the server-wide large-body budget: anonymous
// trickled bodies would otherwise hold it all and every authenticated
// large REST body (batches) would be refused with 503 busy.
func TestAWSKMSPreAuthBodyTakesNoRESTBudget(t *testing.T) {
	s := New(sys.New(barrier.New(inmem.New()), time.Now), Options{})
	call := func(path string, in, out any) {
		t.Helper()
		b, _ := json.Marshal(in)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest("POST", path, bytes.NewReader(b)))
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
		if out != nil {
			json.Unmarshal(w.Body.Bytes(), out)
		}
	}
	var ir client.InitResponse
	call("/v1/sys/init", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	call("/v1/sys/unseal", client.UnsealRequest{Share: ir.Shares[0]}, nil)

	pr, pw := io.Pipe()
	defer pw.Close()
	body := &firstRead{r: pr, read: make(chan struct{})}
	req := httptest.NewRequest("POST", "/", body)
	req.ContentLength = awsMaxBody - 1
	req.Header.Set("Content-Type", awsContentType)
	req.Header.Set("X-Amz-Target", "TrentService.Encrypt")
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeHTTP(httptest.NewRecorder(), req)
	}()
	select {
	case <-body.read:
	case <-time.After(10 * time.Second):
		t.Fatal("the door never read the body")
	}
	if !s.bodies.sem.TryAcquire(MaxBodyBudget) {
		t.Fatal("an unauthenticated AWS KMS body holds a share of the REST large-body budget")
	}
	s.bodies.sem.Release(MaxBodyBudget)
	pw.CloseWithError(io.ErrUnexpectedEOF)
	<-done

	// The door's own pre-authentication budget is bounded and given back.
	if !s.aws.bodies.sem.TryAcquire(awsPreAuthBudget) {
		t.Fatal("the door's pre-authentication budget was not given back")
	}
	s.aws.bodies.sem.Release(awsPreAuthBudget)
}
