package server

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/ciphertext"
	"github.com/cofferkms/coffer/internal/keys"
)

// vaultContextKey is the Coffer encryption context key a transit context
// is bound under: a Vault context (base64 bytes) becomes the context
// {"vault_context": <its standard base64>}, so policies can condition on
// context.vault_context and a ciphertext decrypts only with the same
// context (docs/vault-compat.md).
const vaultContextKey = "vault_context"

// vaultItem is one transit operation's input (the request itself, or one
// of its batch_input).
type vaultItem struct {
	Plaintext  string `json:"plaintext"`
	Ciphertext string `json:"ciphertext"`
	Context    string `json:"context"`
	Reference  string `json:"reference"`
}

// vaultTransitRequest is the body of every transit write. Fields Coffer
// does not use are ignored, as Vault ignores unknown ones.
type vaultTransitRequest struct {
	vaultItem
	BatchInput []vaultItem `json:"batch_input"`
	// keys/<name>
	Type string `json:"type"`
	// datakey
	Bits int `json:"bits"`
	// random
	Bytes  int    `json:"bytes"`
	Format string `json:"format"`
	// keys/<name>/config
	AutoRotatePeriod     json.RawMessage `json:"auto_rotate_period"`
	MinDecryptionVersion int             `json:"min_decryption_version"`
	MinEncryptionVersion int             `json:"min_encryption_version"`
	Exportable           bool            `json:"exportable"`
	AllowPlaintextBackup bool            `json:"allow_plaintext_backup"`
	Derived              bool            `json:"derived"`
	Convergent           bool            `json:"convergent_encryption"`
}

// UnmarshalJSON decodes leniently: unknown fields are ignored.
func (q *vaultTransitRequest) UnmarshalJSON(b []byte) error {
	type plain vaultTransitRequest
	return json.Unmarshal(b, (*plain)(q))
}

// items is the request's operations: its batch, or itself alone.
func (q *vaultTransitRequest) items() ([]vaultItem, bool, error) {
	if q.BatchInput == nil {
		return []vaultItem{q.vaultItem}, false, nil
	}
	return q.BatchInput, true, checkBatch(len(q.BatchInput))
}

// transitRef is the Coffer key a transit key name is: the alias/NAME.
func transitRef(r *http.Request) string { return keys.AliasPrefix + r.PathValue("key") }

func transitResource[Req any](r *http.Request, _ *Req) string { return transitRef(r) }

// vaultContext is the Coffer context of a transit context.
func vaultContext(c string) (map[string]string, error) {
	if c == "" {
		return nil, nil
	}
	raw, err := base64.StdEncoding.DecodeString(c)
	if err != nil {
		return nil, badRequest("context is not standard base64")
	}
	ec := map[string]string{vaultContextKey: base64.StdEncoding.EncodeToString(raw)}
	if _, err := ciphertext.AppendContext(nil, ec); err != nil {
		return nil, badRequest("context: %v", err)
	}
	return ec, nil
}

func decodePlaintext(p string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, badRequest("plaintext is not standard base64 (Vault transit takes base64 plaintext)")
	}
	return b, nil
}

// vaultWrite registers h for PUT and POST (Vault clients write with
// either).
func (s *Server) vaultWrite(path string, h http.HandlerFunc) {
	s.mux.HandleFunc("PUT "+path, h)
	s.mux.HandleFunc("POST "+path, h)
}

// vaultBody lets an empty write body stand for {} (Vault clients send
// none for rotate or a default create).
func vaultBody(h http.HandlerFunc) http.HandlerFunc {
	return vaultHandler(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodPost || r.Method == http.MethodPut) && (r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0) {
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader("{}")), 2
		}
		h(w, r)
	})
}

// batchAnswer is a transit answer: the single result's fields, or
// batch_results.
func batchAnswer(batch bool, results []map[string]any) vaultSecret {
	if batch {
		return vaultSecret{Data: map[string]any{"batch_results": results}}
	}
	return vaultSecret{Data: results[0]}
}

// transitOutcome is one transit item's result: the context it used and the
// key version that served it (for the audit), and its answer's fields,
// built only when the item succeeded.
type transitOutcome struct {
	ec      map[string]string
	keyID   string
	version uint32
	answer  func() map[string]any
}

// transitItems runs op on every item and answers as Vault does: a single
// item's error is the request's, a batch item's error is that item's
// answer. Every item is audited (a batch item on a record of its own).
func (s *Server) transitItems(ctx context.Context, ref string, items []vaultItem, batch bool, op func(it vaultItem) (transitOutcome, error)) (vaultSecret, error) {
	results := make([]map[string]any, len(items))
	for i, it := range items {
		out, err := op(it)
		if !batch {
			if err != nil {
				return vaultSecret{}, err
			}
			recordOne(ctx, out.ec, out.keyID, out.version)
		} else {
			s.recordItem(ctx, ref, out.ec, out.keyID, out.version, err)
		}
		if err != nil {
			results[i] = vaultItemError(err)
			continue
		}
		results[i] = out.answer()
		if it.Reference != "" {
			results[i]["reference"] = it.Reference
		}
	}
	return batchAnswer(batch, results), nil
}

// vaultItemError is one failed batch item's answer.
func vaultItemError(err error) map[string]any {
	_, _, msg := classify(err)
	return map[string]any{"error": msg}
}

func (s *Server) vaultTransitRoutes(mount string) {
	k := s.sys.Keys
	base := "/v1/" + mount
	crypt := route{action: "kms:Encrypt", door: doorVault, limit: MaxBatchBody, selfAuthz: true}

	s.vaultWrite(base+"/encrypt/{key}", vaultBody(handle(s, crypt, transitResource[vaultTransitRequest],
		func(ctx context.Context, r *http.Request, p auth.Principal, req *vaultTransitRequest) (vaultSecret, error) {
			ref := transitRef(r)
			items, batch, err := req.items()
			if err != nil {
				return vaultSecret{}, err
			}
			if err := s.vaultUpsert(ctx, r, &p, ref, req, items); err != nil {
				return vaultSecret{}, err
			}
			return s.transitItems(ctx, ref, items, batch, func(it vaultItem) (transitOutcome, error) {
				ec, err := vaultContext(it.Context)
				if err == nil {
					err = s.authorizeItem(ctx, r, &p, "kms:Encrypt", ref, ec)
				}
				var res client.EncryptResponse
				if err == nil {
					var pt []byte
					if pt, err = decodePlaintext(it.Plaintext); err == nil {
						res, err = s.encrypt(ctx, &client.EncryptRequest{KeyID: ref, Plaintext: pt, Context: ec})
						clear(pt)
					}
				}
				return transitOutcome{ec: ec, keyID: res.KeyID, version: res.KeyVersion, answer: func() map[string]any {
					return map[string]any{"ciphertext": formatVaultCiphertext(res.Ciphertext, res.KeyVersion), "key_version": res.KeyVersion}
				}}, err
			})
		})))

	crypt.action = "kms:Decrypt"
	s.vaultWrite(base+"/decrypt/{key}", vaultBody(handle(s, crypt, transitResource[vaultTransitRequest],
		func(ctx context.Context, r *http.Request, p auth.Principal, req *vaultTransitRequest) (vaultSecret, error) {
			ref := transitRef(r)
			items, batch, err := req.items()
			if err != nil {
				return vaultSecret{}, err
			}
			return s.transitItems(ctx, ref, items, batch, func(it vaultItem) (transitOutcome, error) {
				ec, err := vaultContext(it.Context)
				var ct []byte
				if err == nil {
					ct, _, err = parseVaultCiphertext(it.Ciphertext)
				}
				if err == nil {
					err = s.authorizeItem(ctx, r, &p, "kms:Decrypt", ref, ec)
				}
				var res client.DecryptResponse
				if err == nil {
					// The path's key must be the ciphertext's (the key
					// service refuses another's).
					res, err = s.decrypt(ctx, &client.DecryptRequest{Ciphertext: ct, Context: ec, KeyID: ref})
				}
				return transitOutcome{ec: ec, keyID: res.KeyID, version: res.KeyVersion, answer: func() map[string]any {
					defer clear(res.Plaintext)
					return map[string]any{"plaintext": base64.StdEncoding.EncodeToString(res.Plaintext)}
				}}, err
			})
		})))

	crypt.action = "kms:ReEncrypt"
	s.vaultWrite(base+"/rewrap/{key}", vaultBody(handle(s, crypt, transitResource[vaultTransitRequest],
		func(ctx context.Context, r *http.Request, p auth.Principal, req *vaultTransitRequest) (vaultSecret, error) {
			ref := transitRef(r)
			items, batch, err := req.items()
			if err != nil {
				return vaultSecret{}, err
			}
			return s.transitItems(ctx, ref, items, batch, func(it vaultItem) (transitOutcome, error) {
				ec, err := vaultContext(it.Context)
				var dst keys.Sealed
				var ct []byte
				if err == nil {
					ct, _, err = parseVaultCiphertext(it.Ciphertext)
				}
				// Authorized before the path's key is looked up: a caller
				// without rights on it learns neither whether it exists nor
				// whether the ciphertext is its.
				if err == nil {
					err = s.authorizeReEncrypt(ctx, r, &p, &client.ReEncryptRequest{Ciphertext: ct, SourceContext: ec, DestinationKeyID: ref})
				}
				if err == nil {
					err = s.sameKey(ref, ct)
				}
				if err == nil {
					_, dst, err = k.ReEncrypt(ctx, ct, ec, ref, ec)
				}
				return transitOutcome{ec: ec, keyID: dst.KeyID, version: dst.KeyVersion, answer: func() map[string]any {
					return map[string]any{"ciphertext": formatVaultCiphertext(dst.Ciphertext, dst.KeyVersion), "key_version": dst.KeyVersion}
				}}, err
			})
		})))

	for _, kind := range []string{"plaintext", "wrapped"} {
		action := "kms:GenerateDataKey"
		if kind == "wrapped" {
			action = "kms:GenerateDataKeyWithoutPlaintext"
		}
		s.vaultWrite(base+"/datakey/"+kind+"/{key}", vaultBody(handle(s, route{action: action, door: doorVault, selfAuthz: true}, transitResource[vaultTransitRequest],
			func(ctx context.Context, r *http.Request, p auth.Principal, req *vaultTransitRequest) (vaultSecret, error) {
				ref := transitRef(r)
				bits := req.Bits
				if bits == 0 {
					bits = 256
				}
				if bits != 128 && bits != 256 && bits != 512 {
					return vaultSecret{}, badRequest("bits must be 128, 256 or 512, not %d", bits)
				}
				ec, err := vaultContext(req.Context)
				if err != nil {
					return vaultSecret{}, err
				}
				if err := s.authorizeItem(ctx, r, &p, action, ref, ec); err != nil {
					return vaultSecret{}, err
				}
				dk, sealed, err := k.GenerateDataKey(ctx, ref, bits/8, ec)
				if err != nil {
					return vaultSecret{}, err
				}
				recordOne(ctx, ec, sealed.KeyID, sealed.KeyVersion)
				data := map[string]any{"ciphertext": formatVaultCiphertext(sealed.Ciphertext, sealed.KeyVersion), "key_version": sealed.KeyVersion}
				if kind == "plaintext" {
					data["plaintext"] = base64.StdEncoding.EncodeToString(dk)
				}
				clear(dk)
				return vaultSecret{Data: data}, nil
			})))
	}

	keyRoute := func(action string) route { return route{action: action, door: doorVault} }
	s.vaultWrite(base+"/keys/{key}", vaultBody(handle(s, keyRoute("key:Create"), transitResource[vaultTransitRequest],
		func(ctx context.Context, r *http.Request, p auth.Principal, req *vaultTransitRequest) (vaultSecret, error) {
			if err := checkVaultKeyOptions(req); err != nil {
				return vaultSecret{}, err
			}
			key, err := k.Create(ctx, transitKeyRequest(r))
			if errors.Is(err, keys.ErrAliasExists) {
				// Vault's create of an existing key changes nothing and
				// answers its description: key:Describe's effect, decided
				// as GET keys/NAME decides it (key:Create is no read).
				if err = s.authorizeItem(ctx, r, &p, "key:Describe", transitRef(r), nil); err != nil {
					return vaultSecret{}, err
				}
				key, err = k.Describe(ctx, transitRef(r))
			}
			return vaultKeyAnswer(ctx, r, key, err)
		})))
	s.mux.HandleFunc("GET "+base+"/keys/{key}", vaultHandler(handle(s, keyRoute("key:Describe"), transitResource[empty],
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (vaultSecret, error) {
			key, err := k.Describe(ctx, transitRef(r))
			return vaultKeyAnswer(ctx, r, key, err)
		})))
	s.vaultWrite(base+"/keys/{key}/rotate", vaultHandler(handle(s, keyRoute("key:Rotate"), transitResource[empty],
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (vaultSecret, error) {
			key, err := k.Rotate(ctx, transitRef(r))
			return vaultKeyAnswer(ctx, r, key, err)
		})))
	s.vaultWrite(base+"/keys/{key}/config", vaultBody(handle(s, keyRoute("key:Update"), transitResource[vaultTransitRequest],
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *vaultTransitRequest) (vaultSecret, error) {
			if req.MinDecryptionVersion > 1 || req.MinEncryptionVersion > 0 || req.Exportable || req.AllowPlaintextBackup {
				return vaultSecret{}, badRequest("min_decryption_version, min_encryption_version, exportable and allow_plaintext_backup cannot be changed in Coffer (docs/vault-compat.md)")
			}
			var u keys.UpdateRequest
			if len(req.AutoRotatePeriod) != 0 {
				p, err := vaultPeriod(req.AutoRotatePeriod)
				if err != nil {
					return vaultSecret{}, err
				}
				u.RotationPeriod = &p
			}
			key, err := k.Update(ctx, transitRef(r), u)
			return vaultKeyAnswer(ctx, r, key, err)
		})))

	random := vaultBody(handle(s, route{action: "kms:GenerateRandom", door: doorVault}, nil,
		func(_ context.Context, r *http.Request, _ auth.Principal, req *vaultTransitRequest) (vaultSecret, error) {
			n := req.Bytes
			for _, seg := range []string{r.PathValue("a"), r.PathValue("b")} {
				switch seg {
				case "", "platform", "seal", "all":
				default:
					v, err := strconv.Atoi(seg)
					if err != nil {
						return vaultSecret{}, badRequest("random/%s: want a number of bytes or a source (platform)", boundString(seg, 32))
					}
					n = v
				}
			}
			if n == 0 {
				n = 32
			}
			b, err := keys.GenerateRandom(n)
			if err != nil {
				return vaultSecret{}, err
			}
			var out string
			switch req.Format {
			case "", "base64":
				out = base64.StdEncoding.EncodeToString(b)
			case "hex":
				out = hex.EncodeToString(b)
			default:
				return vaultSecret{}, badRequest("format %q: want base64 or hex", boundString(req.Format, 32))
			}
			return vaultSecret{Data: map[string]any{"random_bytes": out}}, nil
		}))
	s.vaultWrite(base+"/random", random)
	s.vaultWrite(base+"/random/{a}", random)
	s.vaultWrite(base+"/random/{a}/{b}", random)
}

// vaultUpsert creates the missing transit key ref names, as Vault's
// encrypt does, when the caller may key:Create it; otherwise (or when the
// key exists) it does nothing and the encrypt answers for itself. Nothing
// is created for a request the encrypt would refuse whole (no well-formed
// item) or with key options Coffer does not have. The creation is a
// change like POST keys/NAME: its intent is recorded before it and its
// outcome after, under the request's id, and if the trail cannot record
// the intent nothing is created.
func (s *Server) vaultUpsert(ctx context.Context, r *http.Request, p *auth.Principal, ref string, req *vaultTransitRequest, items []vaultItem) error {
	if _, _, err := s.sys.Keys.Names(ref); !errors.Is(err, keys.ErrNotFound) {
		return nil
	}
	// A name Create would refuse (one holding a credential included) gets
	// no intent recorded for a creation that cannot happen.
	if keys.CheckAlias(ref) != nil {
		return nil
	}
	// Decided on its own pin table: this decision must not pin the alias
	// to "no key", or the encrypt, authorized after the creation, would
	// not find the key it was authorized on.
	if s.authorizeItem(keys.WithPins(ctx), r, p, "key:Create", ref, nil) != nil {
		return nil // no upsert right: the missing key is the encrypt's 404 (or 403)
	}
	if err := checkVaultKeyOptions(req); err != nil {
		return err
	}
	wellFormed := false
	for _, it := range items {
		if _, err := vaultContext(it.Context); err != nil {
			continue
		}
		if pt, err := decodePlaintext(it.Plaintext); err == nil {
			clear(pt)
			wellFormed = true
			break
		}
	}
	if !wellFormed {
		return nil // every item fails on its own; no key for that
	}
	rec := audit.Record{Action: "key:Create", Resource: ref, Time: time.Now().UTC()}
	if in := recordOf(ctx); in != nil {
		rec.RequestID, rec.Door, rec.Source, rec.Principal, rec.Token = in.RequestID, in.Door, in.Source, in.Principal, in.Token
	}
	intent := rec
	intent.Phase = audit.PhaseIntent
	if err := s.audit.Record(ctx, &intent); err != nil {
		if clientGone(r, err) {
			return fmt.Errorf("the client closed the request before the key's creation was recorded: %w", err)
		}
		s.log.Error("audit record failed; the transit key is not created", "request_id", rec.RequestID, "error", err)
		return &apiError{http.StatusServiceUnavailable, "audit_unavailable", "the audit trail cannot record the creation of the missing key; nothing was created"}
	}
	key, err := s.sys.Keys.Create(ctx, transitKeyRequest(r))
	rec.Outcome, rec.KeyID = "ok", key.ID
	if errors.Is(err, keys.ErrAliasExists) {
		// Another request created it meanwhile: this one created nothing,
		// and its encrypt uses that key once this replica has seen it.
		err = s.awaitAlias(ctx, ref)
		rec.KeyID, _, _ = s.sys.Keys.Names(ref)
		rec.Outcome, rec.ErrorCode, rec.Detail = "error", "alias_exists", "created meanwhile by another request; the encrypt uses that key"
		if err != nil {
			rec.Detail = "created meanwhile by another request, which this replica has not seen yet"
		}
	} else if err != nil {
		_, rec.ErrorCode, _ = classify(err)
		rec.Outcome = "error"
	}
	rec.Token, rec.TokenHMAC = intent.Token, intent.TokenHMAC
	if aerr := s.audit.Record(context.WithoutCancel(ctx), &rec); aerr != nil {
		s.log.Error("audit record of a transit key's creation failed", "request_id", rec.RequestID, "error", aerr)
	}
	return err
}

// awaitAlias waits, briefly, until this replica knows the alias another
// one has just created (its index follows the store); then the encrypt
// finds it. A replica that lags longer answers a retryable 503.
func (s *Server) awaitAlias(ctx context.Context, ref string) error {
	deadline := time.Now().Add(aliasWait)
	for {
		if _, _, err := s.sys.Keys.Names(ref); !errors.Is(err, keys.ErrNotFound) {
			return nil
		}
		if time.Now().After(deadline) {
			return &apiError{http.StatusServiceUnavailable, "busy", "the key was created by another request on another replica and is not visible here yet; retry"}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// transitKeyRequest is the key keys/NAME and encrypt's upsert create.
func transitKeyRequest(r *http.Request) keys.CreateRequest {
	return keys.CreateRequest{Alias: transitRef(r), Description: "Vault transit key " + r.PathValue("key")}
}

// aliasWait bounds awaitAlias.
var aliasWait = 2 * time.Second

// checkVaultKeyOptions refuses the key options Vault's transit has and
// Coffer's keys do not, for keys/NAME and for encrypt's upsert alike.
func checkVaultKeyOptions(req *vaultTransitRequest) error {
	if req.Type != "" && req.Type != "aes256-gcm96" {
		return badRequest("type %q: Coffer transit keys are aes256-gcm96", boundString(req.Type, 32))
	}
	if req.Derived || req.Convergent || req.Exportable || req.AllowPlaintextBackup {
		return badRequest("derived, convergent_encryption, exportable and allow_plaintext_backup are not supported (docs/vault-compat.md)")
	}
	return nil
}

// sameKey refuses a ciphertext of another key than ref's.
func (s *Server) sameKey(ref string, ct []byte) error {
	id, _, err := s.sys.Keys.Names(ref)
	if err != nil {
		return err
	}
	if ciphertextKey(ct) != id {
		return fmt.Errorf("%w: the ciphertext was not made with key %s", keys.ErrInvalidCiphertext, ref)
	}
	return nil
}

// recordOne names a single transit operation's key, version and context
// in its audit record.
func recordOne(ctx context.Context, ec map[string]string, keyID string, version uint32) {
	if rec := recordOf(ctx); rec != nil {
		rec.KeyID, rec.Version, rec.ContextValues = keyID, version, ec
	}
}

// vaultPeriod reads auto_rotate_period: a duration string ("24h") or
// seconds; zero turns automatic rotation off.
func vaultPeriod(raw json.RawMessage) (string, error) {
	var d time.Duration
	var secs int64
	var str string
	switch {
	case json.Unmarshal(raw, &secs) == nil:
		d = time.Duration(secs) * time.Second
	case json.Unmarshal(raw, &str) == nil:
		if str == "" || str == "0" {
			return "", nil
		}
		if n, err := strconv.ParseInt(str, 10, 64); err == nil {
			d = time.Duration(n) * time.Second
		} else if d, err = time.ParseDuration(str); err != nil {
			if _, perr := keys.ParsePeriod(str); perr != nil {
				return "", badRequest("auto_rotate_period %q: want a duration like 24h or a number of seconds", boundString(str, 32))
			}
			return str, nil
		}
	default:
		return "", badRequest("auto_rotate_period: want a duration like 24h or a number of seconds")
	}
	if d < 0 || d > 100*365*24*time.Hour {
		return "", badRequest("auto_rotate_period: want a duration from 0 to 100 years")
	}
	if d == 0 {
		return "", nil
	}
	return keys.FormatPeriod(d), nil
}

// vaultKeyAnswer is a transit key read: Vault's fields, from the Coffer
// key behind the alias.
func vaultKeyAnswer(ctx context.Context, r *http.Request, key keys.Key, err error) (vaultSecret, error) {
	if err != nil {
		return vaultSecret{}, err
	}
	if rec := recordOf(ctx); rec != nil {
		rec.KeyID, rec.Version = key.ID, key.PrimaryVersion
	}
	versions := make(map[string]int64, len(key.Versions))
	for _, v := range key.Versions {
		versions[strconv.FormatUint(uint64(v.Version), 10)] = v.CreatedAt.Unix()
	}
	return vaultSecret{Data: map[string]any{
		"name": r.PathValue("key"), "type": "aes256-gcm96", "latest_version": key.PrimaryVersion,
		"min_decryption_version": 1, "min_encryption_version": 0, "min_available_version": 0, "keys": versions,
		"deletion_allowed": false, "derived": false, "exportable": false, "allow_plaintext_backup": false,
		"supports_encryption": true, "supports_decryption": true, "supports_derivation": false, "supports_signing": false,
		"auto_rotate_period": int64(key.RotationPeriod / time.Second), "imported_key": false, "coffer_key_id": key.ID,
	}}, nil
}
