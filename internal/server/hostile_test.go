package server_test

// A hostile-HTTP corpus against the real listener of server.Run (its
// timeouts, header limit, HTTP/1.1 and h2c): malformed and oversized JSON on
// every route, odd methods and paths, absurd headers, odd transfer codings
// over raw TCP, HTTP/2 without TLS, bodies that stop half way. Whatever
// comes in, Coffer's handlers answer below 500 (Go's own 501 and 505 for
// transfer codings and versions it does not support are fine), nothing
// panics, and the server still serves afterwards.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/internal/server"
)

// runLogged starts server.Run in dev mode on loopback with its log in buf
// (with a self-signed certificate when tlsAuto is set).
func runLogged(t *testing.T, buf *syncBuffer, tlsAuto ...bool) server.Banner {
	t.Helper()
	cfg := server.Config{Dev: true, Listen: "127.0.0.1:0", DevDir: t.TempDir()}
	cfg.TLS.Auto = len(tlsAuto) > 0 && tlsAuto[0]
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Banner, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- server.Run(ctx, cfg, slog.New(slog.NewTextHandler(buf, nil)), func(b server.Banner) { ready <- b })
	}()
	select {
	case b := <-ready:
		t.Cleanup(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Error(err)
			}
		})
		return b
	case err := <-errc:
		cancel()
		t.Fatalf("server: %v", err)
	}
	return server.Banner{}
}

// rawExchange writes req on a fresh TCP connection, half-closes it when
// hangup is set, and returns the status of the first answer (0 when the
// server closed without one).
func rawExchange(t *testing.T, addr string, req []byte, hangup bool) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		return 0, err.Error()
	}
	if hangup {
		c.(*net.TCPConn).CloseWrite()
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, err.Error()
	}
	var proto string
	var status int
	if _, err := fmt.Sscanf(line, "%s %d", &proto, &status); err != nil {
		return 0, line
	}
	rest, _ := io.ReadAll(io.LimitReader(br, 2048))
	return status, line + string(rest)
}

// hostileRoutes are the API's routes with a concrete path.
var hostileRoutes = []string{
	"POST /v1/sys/init", "POST /v1/sys/unseal", "POST /v1/sys/seal-status", "POST /v1/sys/audit/hash",
	"POST /v1/auth/token/create", "POST /v1/auth/token/lookup", "POST /v1/auth/token/renew", "POST /v1/auth/token/renew-self",
	"POST /v1/auth/token/report-leaked", "POST /v1/auth/token/revoke", "POST /v1/auth/token/revoke-principal",
	"POST /v1/auth/token/revoke-role", "POST /v1/auth/assume-role", "POST /v1/auth/cert/login", "POST /v1/auth/kubernetes/login",
	"POST /v1/auth/kubernetes/clusters", "POST /v1/keys", "PATCH /v1/keys/alias%2Fh", "POST /v1/keys/alias%2Fh/rotate",
	"POST /v1/keys/alias%2Fh/schedule-deletion", "PUT /v1/keys/alias%2Fh/policy", "POST /v1/aliases",
	"POST /v1/kms/encrypt", "POST /v1/kms/decrypt", "POST /v1/kms/reencrypt", "POST /v1/kms/datakey",
	"POST /v1/kms/datakey-without-plaintext", "POST /v1/kms/random", "POST /v1/kms/encrypt-batch", "POST /v1/kms/decrypt-batch",
	"PUT /v1/policies/p", "POST /v1/policies/simulate", "POST /v1/roles", "PUT /v1/roles/r", "POST /v1/access-keys",
	"PATCH /v1/access-keys/cfak_x", "POST /v1/secrets/wait",
}

// hostileBodies are bad JSON bodies every route gets.
var hostileBodies = map[string]string{
	"empty":            ``,
	"open brace":       `{`,
	"array":            `[]`,
	"null":             `null`,
	"string":           `"x"`,
	"number":           `1e999`,
	"unknown field":    `{"zz":1}`,
	"wrong types":      `{"key_id":1,"plaintext":{},"context":[],"items":{},"shares":"x","threshold":"x","bytes":"x","policies":1,"name":[]}`,
	"huge numbers":     `{"shares":1e400,"threshold":-99999999999999999999,"bytes":18446744073709551617,"pending_days":-1}`,
	"duplicate keys":   `{"key_id":"a","key_id":"b","items":[],"items":[{}]}`,
	"nul bytes":        "{\"key_id\":\"a\u0000b\",\"name\":\"\\u0000\",\"role\":\"\\u0000\",\"document\":\"\\u0000\"}",
	"invalid utf-8":    "{\"key_id\":\"\xff\xfe\",\"name\":\"\xc3\",\"role\":\"\xed\xa0\x80\",\"display_name\":\"\xff\"}",
	"deep nesting":     strings.Repeat(`{"a":`, 5000) + strings.Repeat(`}`, 5000),
	"deep arrays":      `{"items":` + strings.Repeat(`[`, 100000) + strings.Repeat(`]`, 100000) + `}`,
	"trailing garbage": `{}garbage`,
	"two objects":      `{}{}`,
	"bad base64":       `{"plaintext":"!!!","ciphertext":"%%%","items":[{"ciphertext":"***"}]}`,
	"bad unicode esc":  `{"key_id":"\ud800\udZZZ"}`,
	"long string":      `{"key_id":"` + strings.Repeat("k", 900<<10) + `"}`,
	"many items":       `{"items":[` + strings.Repeat(`{},`, 2000) + `{}]}`,
	"null items":       `{"items":[null,null],"context":null,"policies":[null]}`,
	"bom":              "\xef\xbb\xbf{}",
}

// TestHostileHTTP runs the corpus. Every case is also sent without a
// credential and with a token that has no policies.
func TestHostileHTTP(t *testing.T) {
	logs := &syncBuffer{}
	b := runLogged(t, logs)
	u, _ := url.Parse(b.Addr)
	addr := u.Host
	hc := &http.Client{Timeout: 30 * time.Second}
	cases := 0
	do := func(name, method, path, token string, hdr http.Header, body string) {
		t.Helper()
		cases++
		req, err := http.NewRequest(method, b.Addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Errorf("%s %s %s: %d %s", name, method, path, resp.StatusCode, raw)
		}
	}

	// A key for the routes that name one, and a token with no policies.
	root := b.RootToken
	do("setup key", "POST", "/v1/keys", root, nil, `{"alias":"alias/h"}`)
	nopol := func() string {
		req, _ := http.NewRequest("POST", b.Addr+"/v1/auth/token/create", strings.NewReader(`{"ttl":"1h"}`))
		req.Header.Set("Authorization", "Bearer "+root)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		i := strings.Index(string(raw), `"token":"`)
		if i < 0 {
			t.Fatalf("token create: %s", raw)
		}
		tok := string(raw[i+9:])
		return tok[:strings.IndexByte(tok, '"')]
	}()

	// Every route with every bad body, as root, as a token without
	// policies and as nobody.
	for _, rt := range hostileRoutes {
		method, path, _ := strings.Cut(rt, " ")
		if path == "/v1/sys/init" {
			continue // init refuses anyway (already initialized); keep it cheap
		}
		for name, body := range hostileBodies {
			for _, tok := range []string{root, nopol, ""} {
				do(name, method, path, tok, http.Header{"Content-Type": {"application/json"}}, body)
			}
		}
	}

	// Odd methods and paths.
	for _, m := range []string{"FOO", "get", "TRACE", "OPTIONS", "PROPFIND", strings.Repeat("M", 4096), "DELETE", "PUT", "PATCH", "HEAD"} {
		do("method "+m[:min(len(m), 8)], m, "/v1/keys", root, nil, "")
	}
	for _, p := range []string{
		"/v1/keys/%2F", "/v1/keys/..%2F..%2Fsys%2Fseal", "/v1/keys/%2e%2e", "/v1/x/../sys/seal", "/v1/./keys", "//v1/keys",
		"/v1/keys/%00", "/v1/keys/" + strings.Repeat("a", 8000), "/v1/keys/alias%2F%2F", "/v1/keys/%E2%80%AE",
		"/v1/keys/%FF%FE", "/v1/keys?%zz", "/v1/keys/a%2Fb%2Fc%2Fd/rotate", "/v1/aliases/alias%2F..", "/V1/KEYS", "/v1/keys/", "/",
		"/v1/sys/seal/../seal", "/v1/kms/encrypt;jsessionid=1", "/v1/keys/*", "/v1/keys/" + strings.Repeat("%41", 3000),
	} {
		for _, m := range []string{"GET", "POST", "DELETE"} {
			do("path", m, p, root, nil, "{}")
		}
	}

	// Absurd headers.
	for name, h := range map[string]http.Header{
		"huge header": {"X-Big": {strings.Repeat("a", 60<<10)}},
		"many headers": func() http.Header {
			h := http.Header{}
			for i := range 2000 {
				h.Set(fmt.Sprintf("X-H%d", i), "v")
			}
			return h
		}(),
		"huge bearer":         {"Authorization": {"Bearer " + strings.Repeat("t", 50<<10)}},
		"empty bearer":        {"Authorization": {"Bearer "}},
		"bad basic":           {"Authorization": {"Basic !!!!"}},
		"basic no colon":      {"Authorization": {"Basic YWJj"}},
		"basic long":          {"Authorization": {"Basic " + strings.Repeat("QUFB", 10000)}},
		"unknown scheme":      {"Authorization": {"Negotiate abc"}},
		"two tokens":          {"Authorization": {"Bearer a", "Bearer b"}, "X-Coffer-Token": {"c"}},
		"door claim":          {"X-Coffer-Door": {"kms-plugin"}},
		"door junk":           {"X-Coffer-Door": {strings.Repeat("d", 10000)}},
		"content type junk":   {"Content-Type": {"text/x; charset=\xff"}},
		"expect":              {"Expect": {"100-continue"}},
		"expect junk":         {"Expect": {"200-ok"}},
		"x-forwarded":         {"X-Forwarded-For": {strings.Repeat("1.1.1.1,", 1000)}},
		"user agent":          {"User-Agent": {strings.Repeat("u", 30000)}},
		"accept-encoding":     {"Accept-Encoding": {"gzip;q=1e99, br, *"}},
		"content-encoding gz": {"Content-Encoding": {"gzip"}},
	} {
		do("header "+name, "POST", "/v1/kms/encrypt", root, h, `{"key_id":"alias/h","plaintext":"aGk="}`)
	}

	// Raw TCP: transfer codings, framing, versions.
	raw := func(name, req string, hangup bool) {
		t.Helper()
		cases++
		st, answer := rawExchange(t, addr, []byte(req), hangup)
		if st >= 500 && st != http.StatusNotImplemented && st != http.StatusHTTPVersionNotSupported {
			t.Errorf("raw %s: %d %.300s", name, st, answer)
		}
	}
	auth := "Authorization: Bearer " + root + "\r\n"
	host := "Host: " + addr + "\r\n"
	enc := "POST /v1/kms/encrypt HTTP/1.1\r\n" + host + auth
	body := `{"key_id":"alias/h","plaintext":"aGk="}`
	for name, req := range map[string]string{
		"chunked":                 enc + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body),
		"chunked bad size":        enc + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body + "\r\n0\r\n\r\n",
		"chunked huge size":       enc + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n" + body,
		"chunked then cl":         enc + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
		"gzip coding":             enc + "Transfer-Encoding: gzip\r\n\r\n" + body,
		"gzip, chunked":           enc + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"identity coding":         enc + "Transfer-Encoding: identity\r\n\r\n" + body,
		"two content-length":      enc + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n" + body,
		"negative length":         enc + "Content-Length: -1\r\n\r\n" + body,
		"huge length":             enc + "Content-Length: 99999999999999999999\r\n\r\n" + body,
		"length over limit":       enc + "Content-Length: 17000000\r\n\r\n" + body,
		"short body":              enc + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)+100) + body,
		"no host":                 "POST /v1/kms/encrypt HTTP/1.1\r\n" + auth + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body,
		"http/1.0":                "POST /v1/kms/encrypt HTTP/1.0\r\n" + auth + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body,
		"http/0.9":                "GET /v1/keys\r\n\r\n",
		"http/9.9":                "GET /v1/keys HTTP/9.9\r\n" + host + "\r\n",
		"http/2 line":             "GET /v1/keys HTTP/2.0\r\n" + host + "\r\n",
		"absolute uri":            "GET http://" + addr + "/v1/keys HTTP/1.1\r\n" + host + auth + "\r\n",
		"asterisk":                "OPTIONS * HTTP/1.1\r\n" + host + "\r\n",
		"connect":                 "CONNECT " + addr + " HTTP/1.1\r\n" + host + "\r\n",
		"bare lf":                 "GET /v1/keys HTTP/1.1\n" + host[:len(host)-2] + "\n\n",
		"space in path":           "GET /v1/ke ys HTTP/1.1\r\n" + host + "\r\n",
		"nul in path":             "GET /v1/keys/\x00 HTTP/1.1\r\n" + host + "\r\n",
		"header no colon":         "GET /v1/keys HTTP/1.1\r\n" + host + "NoColon\r\n\r\n",
		"header obs fold":         "GET /v1/keys HTTP/1.1\r\n" + host + "X-A: a\r\n b\r\n\r\n",
		"header nul":              "GET /v1/keys HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n",
		"huge request line":       "GET /v1/keys/" + strings.Repeat("a", 100<<10) + " HTTP/1.1\r\n" + host + "\r\n",
		"headers over limit":      "GET /v1/keys HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n",
		"garbage":                 "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"h2 preface then junk":    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\xff\xff\xff\xff\xff\xff",
		"upgrade h2c":             "GET /v1/keys HTTP/1.1\r\n" + host + auth + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
		"upgrade websocket":       "GET /v1/keys HTTP/1.1\r\n" + host + auth + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"pipelined":               "GET /healthz HTTP/1.1\r\n" + host + "\r\nGET /v1/keys HTTP/1.1\r\n" + host + auth + "\r\n",
		"batch chunked 1001":      "POST /v1/kms/decrypt-batch HTTP/1.1\r\n" + host + auth + "Transfer-Encoding: chunked\r\n\r\n" + chunked(`{"items":[`+strings.Repeat(`{},`, 1000)+`{}]}`),
		"batch chunked cut":       "POST /v1/kms/decrypt-batch HTTP/1.1\r\n" + host + auth + "Transfer-Encoding: chunked\r\n\r\n" + "a\r\n{\"items\":[",
		"expect 100 then nothing": enc + "Expect: 100-continue\r\nContent-Length: 10\r\n\r\n",
	} {
		raw(name, req, true)
	}
	// Bodies that stop half way while the connection stays open: the
	// client gives up; nothing may break.
	for _, req := range []string{enc + "Content-Length: 100000\r\n\r\n{\"key_id\":", "POST /v1/kms/decrypt-batch HTTP/1.1\r\n" + host + auth + "Content-Length: 5000000\r\n\r\n{\"items\":[{},"} {
		cases++
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(req))
		time.Sleep(200 * time.Millisecond)
		c.Close()
	}

	// HTTP/2 without TLS (prior knowledge).
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Protocols: p, TLSClientConfig: &tls.Config{}}}
	for name, body := range hostileBodies {
		for _, path := range []string{"/v1/kms/encrypt", "/v1/kms/decrypt-batch", "/v1/x/../keys"} {
			cases++
			req, _ := http.NewRequest("POST", b.Addr+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+root)
			resp, err := h2.Do(req)
			if err != nil {
				t.Errorf("h2c %s: %v", name, err)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("h2c: the answer came over %s", resp.Proto)
			}
			if resp.StatusCode >= 500 {
				t.Errorf("h2c %s %s: %d", name, path, resp.StatusCode)
			}
		}
	}

	// Still serving, and no panic in the log.
	do("healthz after", "GET", "/healthz", "", nil, "")
	if st, _ := rawExchange(t, addr, []byte("GET /v1/keys HTTP/1.1\r\n"+host+auth+"\r\n"), true); st != http.StatusOK {
		t.Fatalf("after the corpus: list keys %d", st)
	}
	if l := logs.String(); strings.Contains(l, "panic") || strings.Contains(l, "request failed") {
		t.Fatalf("the server log has a panic or a 5xx:\n%.4000s", l)
	}
	if cases < 80 {
		t.Fatalf("only %d cases", cases)
	}
	t.Logf("%d hostile requests", cases)
}

// chunked encodes s as one chunk and the last chunk.
func chunked(s string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%x\r\n%s\r\n0\r\n\r\n", len(s), s)
	return b.String()
}

// TestHostileInitUnseal: the public routes of an uninitialized and then a
// sealed server, with absurd numbers and shares, answer below 500 (or 503
// sealed/not_initialized on the other routes) and never panic.
func TestHostileInitUnseal(t *testing.T) {
	e := newHTTPEnv(t)
	check := func(name, method, path, body string) (int, []byte) {
		t.Helper()
		st, _, raw := e.send(method, path, nil, []byte(body))
		if st >= 500 && !(st == http.StatusServiceUnavailable && (bytes.Contains(raw, []byte(`"sealed"`)) || bytes.Contains(raw, []byte(`"not_initialized"`)))) {
			t.Errorf("%s: %d %s", name, st, raw)
		}
		return st, raw
	}
	for _, b := range []string{
		`{"shares":-1,"threshold":-1}`, `{"shares":256,"threshold":2}`, `{"shares":3,"threshold":5}`,
		`{"shares":1e9,"threshold":1}`, `{"shares":2147483648,"threshold":2147483648}`, `{"shares":9223372036854775807,"threshold":1}`,
		`{"shares":1,"threshold":0}`, `{"shares":3,"threshold":-3}`, `{"shares":1.5,"threshold":1}`, `{"shares":"3"}`, // zeros ({}, null) mean the defaults
	} {
		st, raw := check("init "+b, "POST", "/v1/sys/init", b)
		if st == http.StatusOK {
			t.Fatalf("init %s was accepted: %.200s", b, raw)
		}
	}
	check("unseal before init", "POST", "/v1/sys/unseal", `{"share":"AAAA"}`)
	check("encrypt before init", "POST", "/v1/kms/encrypt", `{}`)
	if st, raw := check("init", "POST", "/v1/sys/init", `{"shares":3,"threshold":2}`); st != http.StatusOK {
		t.Fatalf("init: %d %s", st, raw)
	}
	for _, b := range []string{
		`{"share":""}`, `{"share":"x"}`, `{"share":"AAAA"}`, `{"share":"` + strings.Repeat("A", 900<<10) + `"}`,
		`{"share":"` + strings.Repeat("/", 100) + `"}`, `{"share":"\u0000"}`, `{"reset":true}`, `{"share":"AAAA","reset":true}`,
		`{"share":1}`, `{"share":null}`, `[]`,
	} {
		check("unseal "+b[:min(len(b), 40)], "POST", "/v1/sys/unseal", b)
	}
	check("encrypt while sealed", "POST", "/v1/kms/encrypt", `{}`)
	check("seal status", "GET", "/v1/sys/seal-status", "")
}

// TestHostileHTTP2TLS: the bad bodies and paths over HTTP/2 with TLS (ALPN
// h2), the production protocol, as root and without a credential.
func TestHostileHTTP2TLS(t *testing.T) {
	logs := &syncBuffer{}
	b := runLogged(t, logs, true)
	pem, err := os.ReadFile(b.CACertFile)
	if err != nil {
		t.Fatalf("the self-signed certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	n := 0
	for name, body := range hostileBodies {
		for _, rt := range []string{"POST /v1/kms/encrypt", "POST /v1/kms/decrypt-batch", "POST /v1/kms/encrypt-batch", "POST /v1/keys", "PUT /v1/policies/p", "POST /v1/x/../keys", "POST /v1/auth/assume-role"} {
			method, path, _ := strings.Cut(rt, " ")
			for _, tok := range []string{b.RootToken, ""} {
				n++
				req, _ := http.NewRequest(method, b.Addr+path, strings.NewReader(body))
				if tok != "" {
					req.Header.Set("Authorization", "Bearer "+tok)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatalf("h2 %s %s: %v", name, path, err)
				}
				raw, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					t.Fatalf("the answer came over %s", resp.Proto)
				}
				if resp.StatusCode >= 500 {
					t.Errorf("h2 %s %s %s: %d %s", name, method, path, resp.StatusCode, raw)
				}
			}
		}
	}
	if l := logs.String(); strings.Contains(l, "panic") || strings.Contains(l, "request failed") {
		t.Fatalf("the server log has a panic or a 5xx:\n%.4000s", l)
	}
	t.Logf("%d hostile requests over h2+TLS", n)
}
