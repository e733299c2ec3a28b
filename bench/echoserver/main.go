// Command echoserver is the "floor" for Coffer's HTTP throughput: a minimal
// Go HTTP server that does the same JSON work as Coffer's encrypt endpoints,
// minus the crypto, the auth and the storage. `coffer bench` against it shows
// how fast this machine's Go HTTP stack can go at all; bench/http-floor.sh
// compares Coffer with it.
//
// For a POST on any path it decodes the body as a client.EncryptRequest and
// answers a client.EncryptResponse whose ciphertext is the plaintext; on a
// path ending in "-batch" it decodes a client.BatchEncryptRequest and answers
// a client.BatchEncryptResponse the same way. A GET answers {}. The
// Authorization header is accepted and ignored. Over TLS it serves HTTP/2,
// like Coffer.
//
// Usage:
//
//	echoserver [-listen 127.0.0.1:0] [-tls-auto | -tls-cert FILE -tls-key FILE]
//
// The first line on stdout is the server's base URL, for example
// https://127.0.0.1:41235. SIGINT or SIGTERM stop it.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cofferkms/coffer/client"
)

// maxBody bounds a request body, as an API server would.
const maxBody = 32 << 20

func main() {
	log.SetFlags(0)
	log.SetPrefix("echoserver: ")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	certFile := flag.String("tls-cert", "", "PEM certificate file; serves HTTPS with HTTP/2 (needs -tls-key)")
	keyFile := flag.String("tls-key", "", "PEM private key file for -tls-cert")
	tlsAuto := flag.Bool("tls-auto", false, "serve HTTPS with HTTP/2 using a self-signed ECDSA P-256 certificate made in memory")
	flag.Parse()
	if flag.NArg() > 0 {
		log.Fatalf("unexpected arguments: %v", flag.Args())
	}
	if err := run(*listen, *certFile, *keyFile, *tlsAuto); err != nil {
		log.Fatal(err)
	}
}

func run(listen, certFile, keyFile string, tlsAuto bool) error {
	var tlsConf *tls.Config
	switch {
	case tlsAuto && (certFile != "" || keyFile != ""):
		return errors.New("-tls-auto excludes -tls-cert and -tls-key")
	case tlsAuto:
		cert, err := selfSigned()
		if err != nil {
			return err
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}}
	case certFile != "" || keyFile != "":
		if certFile == "" || keyFile == "" {
			return errors.New("-tls-cert and -tls-key go together")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	if tlsConf != nil {
		tlsConf.MinVersion = tls.VersionTLS12
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(handle),
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.Default(),
	}
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
	}
	fmt.Printf("%s://%s\n", scheme, ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() {
		if tlsConf != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// handle echoes an encrypt request as an encrypt answer.
func handle(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
	case http.MethodGet, http.MethodHead:
		writeJSON(w, http.StatusOK, struct{}{})
		return
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	if strings.HasSuffix(r.URL.Path, "-batch") {
		var req client.BatchEncryptRequest
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		res := client.BatchEncryptResponse{Results: make([]client.BatchEncryptResult, len(req.Items))}
		for i, it := range req.Items {
			keyID := it.KeyID
			if keyID == "" {
				keyID = req.KeyID
			}
			res.Results[i].EncryptResponse = client.EncryptResponse{Ciphertext: it.Plaintext, KeyID: keyID, KeyVersion: 1}
		}
		writeJSON(w, http.StatusOK, res)
		return
	}
	var req client.EncryptRequest
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, client.EncryptResponse{Ciphertext: req.Plaintext, KeyID: req.KeyID, KeyVersion: 1})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, client.ErrorBody{Error: client.Error{Code: code, Message: msg}})
}

// selfSigned makes a self-signed ECDSA P-256 certificate for localhost and
// the loopback addresses, valid for a day.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "coffer echoserver"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
