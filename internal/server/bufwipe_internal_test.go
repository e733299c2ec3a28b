package server

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestReleaseBufWipes: the pooled encode buffer of an answer keeps none of
// its bytes once the answer is written (writeJSON and writeAWS put it
// back through releaseBuf); the answer itself is whole.
func TestReleaseBufWipes(t *testing.T) {
	buf := new(bytes.Buffer)
	buf.WriteString(strings.Repeat("plaintext-key ", 100))
	b := buf.Bytes()
	b = b[:cap(b)]
	releaseBuf(buf)
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Fatal("the released buffer still holds the answer's bytes")
	}

	for _, write := range []func(*httptest.ResponseRecorder){
		func(w *httptest.ResponseRecorder) { writeJSON(w, 200, map[string]string{"plaintext": "c2VjcmV0"}) },
		func(w *httptest.ResponseRecorder) { writeAWS(w, 200, map[string]string{"Plaintext": "c2VjcmV0"}, "r") },
	} {
		// The pool hands back the buffer just released (one goroutine,
		// no GC in between): after the write it must be wiped.
		probe := bufPool.Get().(*bytes.Buffer)
		bufPool.Put(probe)
		w := httptest.NewRecorder()
		write(w)
		if !strings.Contains(w.Body.String(), "c2VjcmV0") {
			t.Fatalf("answer %q", w.Body.String())
		}
		if pb := probe.Bytes(); bytes.Contains(pb[:cap(pb)], []byte("c2VjcmV0")) {
			t.Fatal("the pooled buffer keeps the answer")
		}
	}
}
