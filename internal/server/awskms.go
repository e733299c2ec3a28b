package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/server/awskms"
)

// The AWS KMS door (docs/aws-kms.md): AWS's JSON 1.1 protocol on the same
// listener, POST / with X-Amz-Target: TrentService.<Op>, signed with
// Signature Version 4 by an access key. Every operation is a route of
// handle, like the REST ones: the same actions and resources for
// authorization, the same audit (door "aws-kms"), body limits, metrics and
// key service calls. This file holds what is the door's own: dispatch on
// the target, SigV4 authentication, the AWS shapes and error types.

// doorAWSKMS is the audit door of the AWS KMS API.
const doorAWSKMS = "aws-kms"

// awsTargetPrefix starts the X-Amz-Target of every KMS operation.
const awsTargetPrefix = "TrentService."

// awsContentType is the media type of the JSON 1.1 protocol.
const awsContentType = "application/x-amz-json-1.1"

// awsMaxBody bounds an AWS request: a 64 KiB plaintext in base64 with its
// context fits. It is read before authentication (the signature covers
// it), so it stays well below the REST bodies.
const awsMaxBody = 192 << 10

// awsPreAuthBudget bounds the bytes of the door's large bodies (over
// smallBody) being read at once before their signature is checked. They
// take their share of it, not of the server-wide budget (bodyBudget):
// anyone can send them, and trickled ones holding the shared budget would
// refuse every authenticated large REST body (busy). AWS's own requests
// (4 KiB plaintexts) stay far below smallBody and take no share.
const awsPreAuthBudget = 32 * awsMaxBody

// symmetricDefault is the one encryption algorithm and key spec.
const symmetricDefault = "SYMMETRIC_DEFAULT"

// awsKMSDoor is the door's configuration and its operations by name.
type awsKMSDoor struct {
	cfg awskms.Config
	ops map[string]http.HandlerFunc
	// refuse answers requests no operation takes (unknown target, wrong
	// content type), audited as unknown routes of the door.
	refuse func(typ, msg string) http.HandlerFunc
	// bodies is the budget of the large bodies read before
	// authentication (awsPreAuthBudget).
	bodies *bodyBudget
}

// isAWSRequest reports whether r is for the AWS KMS door.
func isAWSRequest(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == "/" && strings.HasPrefix(r.Header.Get("X-Amz-Target"), awsTargetPrefix)
}

// awsKMS dispatches a request of the door to its operation.
func (s *Server) awsKMS(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), awsTargetPrefix)
	if ct := r.Header.Get("Content-Type"); ct != awsContentType {
		s.aws.refuse("SerializationException", fmt.Sprintf("the Content-Type must be %s, not %q", awsContentType, boundString(ct, 64)))(w, r)
		return
	}
	h, ok := s.aws.ops[op]
	if !ok {
		s.aws.refuse("UnknownOperationException", fmt.Sprintf("unknown operation %q (docs/aws-kms.md lists those Coffer implements)", boundString(op, 64)))(w, r)
		return
	}
	h(w, r)
}

// awsTypedError is an error with its AWS error type and HTTP status
// decided; err is the cause, which classify and the audit still see.
type awsTypedError struct {
	typ    string
	status int
	err    error
}

func (e *awsTypedError) Error() string { return e.err.Error() }
func (e *awsTypedError) Unwrap() error { return e.err }

// awsErr is a client error of the door of AWS type typ.
func awsErr(typ, format string, args ...any) error {
	return &awsTypedError{typ: typ, status: http.StatusBadRequest, err: badRequest(format, args...)}
}

// awsSerialization marks a body that could not be decoded: AWS's
// SerializationException (a body over the limit stays a 413).
func awsSerialization(err error) error {
	if status, _, _ := classify(err); status == http.StatusRequestEntityTooLarge {
		return err
	}
	return &awsTypedError{typ: "SerializationException", status: http.StatusBadRequest, err: err}
}

// awsError is the HTTP status and AWS error type of a failure, from its
// REST classification: AWS answers client errors with 400 and the type,
// which the SDKs turn into their typed errors and retry decisions.
func awsError(err error, status int, code string) (int, string) {
	var te *awsTypedError
	if errors.As(err, &te) {
		return te.status, te.typ
	}
	switch code {
	case "key_not_found", "alias_not_found", "not_found":
		return http.StatusBadRequest, "NotFoundException"
	case "permission_denied":
		return http.StatusBadRequest, "AccessDeniedException"
	case "unauthenticated":
		if errors.Is(err, awskms.ErrSignature) {
			return http.StatusBadRequest, "InvalidSignatureException"
		}
		if errors.Is(err, auth.ErrExpired) {
			return http.StatusBadRequest, "ExpiredTokenException" // temporary credentials (awssts.go)
		}
		return http.StatusBadRequest, "UnrecognizedClientException"
	case "too_many_auth_failures":
		return http.StatusBadRequest, "ThrottlingException"
	case "key_disabled":
		return http.StatusBadRequest, "DisabledException"
	case "key_pending_deletion", "invalid_key_state", "key_deleted":
		return http.StatusBadRequest, "KMSInvalidStateException"
	case "invalid_ciphertext":
		return http.StatusBadRequest, "InvalidCiphertextException"
	case "alias_exists":
		return http.StatusBadRequest, "AlreadyExistsException"
	case "body_too_large":
		return http.StatusRequestEntityTooLarge, "ValidationException"
	}
	switch {
	case status == http.StatusInternalServerError:
		return status, "KMSInternalException"
	case status >= 500:
		return http.StatusServiceUnavailable, "DependencyTimeoutException"
	}
	return http.StatusBadRequest, "ValidationException"
}

// writeAWS writes a successful answer of the door, as
// application/x-amz-json-1.1.
func writeAWS(w http.ResponseWriter, status int, v any, requestID string) {
	w.Header().Set("X-Amzn-RequestId", requestID)
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer releaseBuf(buf)
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		writeAWSError(w, http.StatusInternalServerError, "KMSInternalException", "response encoding failed", requestID)
		return
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n")) // the bytes json.Marshal writes
	h := w.Header()
	h.Set("Content-Type", awsContentType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// writeAWSError writes a failure of the door in AWS's shape.
func writeAWSError(w http.ResponseWriter, status int, typ, msg, requestID string) {
	h := w.Header()
	h.Set("X-Amzn-RequestId", requestID)
	h.Set("X-Amzn-ErrorType", typ)
	b, _ := json.Marshal(struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}{typ, msg})
	h.Set("Content-Type", awsContentType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// readBody reads r's body, within limit and the door's pre-authentication
// budget, and puts it back for the decoder; done releases the budget.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) (done func(), body []byte, err error) {
	done, err = s.aws.bodies.acquire(r, limit)
	if err != nil {
		return nil, nil, err
	}
	body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		done()
		var big *http.MaxBytesError
		if errors.As(err, &big) {
			return nil, nil, &apiError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body is larger than %d bytes", limit)}
		}
		return nil, nil, badRequest("the request body could not be read")
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return done, body, nil
}

// awsAuthenticate authenticates a request of the door (or a signed one of
// the STS door, awssts.go) by its SigV4 signature over body: an access
// key's secret, kept in the barrier, signs the request again (internal/iam
// AuthenticateAccessKeySigned), or, with X-Amz-Security-Token, the secret
// derived from that session token (AuthenticateSessionSigned).
func (s *Server) awsAuthenticate(r *http.Request, src netip.Addr, body []byte) (auth.Principal, error) {
	service, need := awskms.Service, []string{"x-amz-target"}
	if !isAWSRequest(r) {
		service, need = awskms.STSService, nil
		if r.Header.Get("Authorization") == "" {
			return auth.Principal{}, &awsTypedError{typ: "MissingAuthenticationToken", status: http.StatusForbidden,
				err: fmt.Errorf("%w: the request is not signed; sign it with AWS Signature Version 4 credentials", auth.ErrUnauthenticated)}
		}
	}
	token := r.Header.Get("X-Amz-Security-Token")
	if token != "" {
		need = append(need, "x-amz-security-token")
	}
	signed, err := awskms.ParseFor(r, service, need...)
	if err != nil {
		return auth.Principal{}, &awsTypedError{typ: "IncompleteSignatureException", status: http.StatusBadRequest,
			err: fmt.Errorf("%w: %v", auth.ErrUnauthenticated, err)}
	}
	verify := func(secret string) error {
		if err := awskms.Verify(r, body, signed, secret, s.aws.cfg.Region, time.Now()); err != nil {
			return fmt.Errorf("%w: %w", auth.ErrUnauthenticated, err)
		}
		return nil
	}
	if token != "" {
		return s.sys.IAM.AuthenticateSessionSigned(r.Context(), token, signed.AccessKeyID, src, verify)
	}
	return s.sys.IAM.AuthenticateAccessKeySigned(signed.AccessKeyID, src, verify)
}

// restFormer is a compatible door's request that has a REST twin: handle
// checks, records and wipes its contexts and plaintext as the twin's
// (contextOf, checkContexts, wipeRequest). The twin shares its slices.
type restFormer interface{ restForm() any }

type awsEncrypt struct{ awskms.EncryptRequest }

func (q *awsEncrypt) restForm() any {
	return &client.EncryptRequest{KeyID: q.KeyId, Plaintext: q.Plaintext, Context: q.EncryptionContext}
}

type awsDecrypt struct{ awskms.DecryptRequest }

func (q *awsDecrypt) restForm() any {
	return &client.DecryptRequest{Ciphertext: q.CiphertextBlob, Context: q.EncryptionContext, KeyID: q.KeyId}
}

type awsDataKey struct{ awskms.GenerateDataKeyRequest }

func (q *awsDataKey) restForm() any {
	return &client.DataKeyRequest{KeyID: q.KeyId, Bytes: q.NumberOfBytes, Context: q.EncryptionContext}
}

type awsReEncrypt struct{ awskms.ReEncryptRequest }

func (q *awsReEncrypt) restForm() any {
	dst := q.DestinationEncryptionContext
	if dst == nil {
		// AWS encrypts under an empty destination context when none is
		// given (Coffer's REST API keeps the source context).
		dst = map[string]string{}
	}
	return &client.ReEncryptRequest{Ciphertext: q.CiphertextBlob, SourceContext: q.SourceEncryptionContext,
		DestinationKeyID: q.DestinationKeyId, DestinationContext: dst}
}

// awsOp registers operation op as a route of handle.
func awsOp[Req, Resp any](s *Server, op, action string, rt route, res resourceOf[Req], fn call[Req, Resp]) {
	rt.action, rt.door = action, doorAWSKMS
	if rt.limit == 0 {
		rt.limit = awsMaxBody
	}
	s.aws.ops[op] = handle(s, rt, res, fn)
}

// ref is the Coffer key reference of an AWS KeyId (id, alias/NAME or the
// ARN of either).
func (d *awsKMSDoor) ref(keyID string) (string, error) {
	if keyID == "" {
		return "", awsErr("ValidationException", "KeyId is required")
	}
	ref, err := d.cfg.Ref(keyID)
	if err != nil {
		return "", &awsTypedError{typ: "NotFoundException", status: http.StatusBadRequest, err: fmt.Errorf("%w: %v", keys.ErrNotFound, err)}
	}
	return ref, nil
}

// resource is what a KeyId is authorized and recorded as: its reference,
// or the KeyId as sent when it is no reference (the call then fails).
func (d *awsKMSDoor) resource(keyID string) string {
	if ref, err := d.cfg.Ref(keyID); err == nil {
		return ref
	}
	return keyID
}

// noteKey names in the request's record the key and version an answer is
// about (the AWS answers carry no version).
func noteKey(ctx context.Context, id string, version uint32) {
	if rec := recordOf(ctx); rec != nil {
		rec.KeyID, rec.Version = id, version
	}
}

// checkAlgorithm refuses every encryption algorithm but the symmetric one.
func checkAlgorithm(field, alg string) error {
	if alg != "" && alg != symmetricDefault {
		return awsErr("ValidationException", "%s %q: Coffer keys are symmetric; only %s is supported", field, boundString(alg, 64), symmetricDefault)
	}
	return nil
}

// dryRun refuses a dry run once it was authorized, as AWS does.
func dryRun(on bool) error {
	if on {
		return &awsTypedError{typ: "DryRunOperationException", status: http.StatusPreconditionFailed,
			err: &apiError{http.StatusPreconditionFailed, "dry_run", "the request would have succeeded, but DryRun was set"}}
	}
	return nil
}

// epoch is t as the JSON 1.1 protocol carries times (seconds).
func epoch(t time.Time) float64 {
	return float64(t.UnixMilli()) / 1000
}

// metadata is the AWS description of a key.
func (d *awsKMSDoor) metadata(k keys.Key) awskms.KeyMetadata {
	m := awskms.KeyMetadata{AWSAccountId: d.cfg.Account, KeyId: k.ID, Arn: d.cfg.KeyARN(k.ID), CreationDate: epoch(k.CreatedAt),
		Enabled: k.State == keys.StateEnabled, Description: k.Description, KeyUsage: "ENCRYPT_DECRYPT", KeyState: string(k.State),
		Origin: "AWS_KMS", KeyManager: "CUSTOMER", KeySpec: symmetricDefault, CustomerMasterKeySpec: symmetricDefault,
		EncryptionAlgorithms: []string{symmetricDefault}}
	if k.DeletionDate != nil {
		m.DeletionDate = epoch(*k.DeletionDate)
	}
	return m
}

// metadataAnswer is the answer of a key service call that returns a key.
func (d *awsKMSDoor) metadataAnswer(ctx context.Context, k keys.Key, err error) (awskms.KeyMetadataResponse, error) {
	if err != nil {
		return awskms.KeyMetadataResponse{}, err
	}
	noteKey(ctx, k.ID, k.PrimaryVersion)
	return awskms.KeyMetadataResponse{KeyMetadata: d.metadata(k)}, nil
}

// page cuts a listing sorted by name after marker to limit entries (AWS:
// 1..1000, default 100); next is the marker of the rest, "" at the end.
func page[T any](items []T, name func(T) string, limit int, marker string) (out []T, next string, err error) {
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > 1000 {
		return nil, "", awsErr("ValidationException", "Limit must be 1..1000, not %d", limit)
	}
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(name(a), name(b)) })
	start := 0
	if marker != "" {
		start = len(items)
		for i, it := range items {
			if name(it) > marker {
				start = i
				break
			}
		}
	}
	items = items[start:]
	if len(items) > limit {
		return items[:limit], name(items[limit-1]), nil
	}
	return items, "", nil
}

// dataKeyBytes is the data key size of a GenerateDataKey request.
func dataKeyBytes(spec string, n int) (int, error) {
	switch {
	case spec != "" && n != 0:
		return 0, awsErr("ValidationException", "give KeySpec or NumberOfBytes, not both")
	case spec == "AES_256":
		return 32, nil
	case spec == "AES_128":
		return 16, nil
	case spec != "":
		return 0, awsErr("ValidationException", "KeySpec %q: want AES_256 or AES_128", boundString(spec, 64))
	case n == 0:
		return 0, awsErr("ValidationException", "KeySpec or NumberOfBytes is required")
	}
	return n, nil
}

func (s *Server) awsKMSRoutes(cfg awskms.Config) {
	d := &s.aws
	d.cfg = cfg.WithDefaults()
	d.ops = map[string]http.HandlerFunc{}
	d.bodies = &bodyBudget{sem: semaphore.NewWeighted(awsPreAuthBudget)}
	d.refuse = func(typ, msg string) http.HandlerFunc {
		return handle(s, route{action: unknownRoute, public: true, sealedOK: true, door: doorAWSKMS}, nil,
			func(context.Context, *http.Request, auth.Principal, *empty) (struct{}, error) {
				return struct{}{}, awsErr(typ, "%s", msg)
			})
	}
	k := s.sys.Keys

	awsOp(s, "Encrypt", "kms:Encrypt", route{},
		func(_ *http.Request, q *awsEncrypt) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awsEncrypt) (awskms.EncryptResponse, error) {
			ref, err := d.ref(q.KeyId)
			if err != nil {
				return awskms.EncryptResponse{}, err
			}
			if err := errors.Join(checkAlgorithm("EncryptionAlgorithm", q.EncryptionAlgorithm), dryRun(q.DryRun)); err != nil {
				return awskms.EncryptResponse{}, err
			}
			res, err := s.encrypt(ctx, &client.EncryptRequest{KeyID: ref, Plaintext: q.Plaintext, Context: q.EncryptionContext})
			if err != nil {
				return awskms.EncryptResponse{}, err
			}
			noteKey(ctx, res.KeyID, res.KeyVersion)
			return awskms.EncryptResponse{CiphertextBlob: res.Ciphertext, KeyId: d.cfg.KeyARN(res.KeyID), EncryptionAlgorithm: symmetricDefault}, nil
		})
	awsOp(s, "Decrypt", "kms:Decrypt", route{},
		func(_ *http.Request, q *awsDecrypt) string { return ciphertextKey(q.CiphertextBlob) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awsDecrypt) (awskms.DecryptResponse, error) {
			if err := errors.Join(checkAlgorithm("EncryptionAlgorithm", q.EncryptionAlgorithm), dryRun(q.DryRun)); err != nil {
				return awskms.DecryptResponse{}, err
			}
			expect, err := s.awsExpectKey(q.KeyId, q.CiphertextBlob)
			if err != nil {
				return awskms.DecryptResponse{}, err
			}
			res, err := s.decrypt(ctx, &client.DecryptRequest{Ciphertext: q.CiphertextBlob, Context: q.EncryptionContext, KeyID: expect})
			if err != nil {
				return awskms.DecryptResponse{}, err
			}
			noteKey(ctx, res.KeyID, res.KeyVersion)
			return awskms.DecryptResponse{Plaintext: res.Plaintext, KeyId: d.cfg.KeyARN(res.KeyID), EncryptionAlgorithm: symmetricDefault}, nil
		})
	for _, withPlain := range []bool{true, false} {
		op, action := "GenerateDataKey", "kms:GenerateDataKey"
		if !withPlain {
			op, action = "GenerateDataKeyWithoutPlaintext", "kms:GenerateDataKeyWithoutPlaintext"
		}
		awsOp(s, op, action, route{},
			func(_ *http.Request, q *awsDataKey) string { return d.resource(q.KeyId) },
			func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awsDataKey) (awskms.GenerateDataKeyResponse, error) {
				ref, err := d.ref(q.KeyId)
				if err != nil {
					return awskms.GenerateDataKeyResponse{}, err
				}
				n, err := dataKeyBytes(q.KeySpec, q.NumberOfBytes)
				if err = errors.Join(err, dryRun(q.DryRun)); err != nil {
					return awskms.GenerateDataKeyResponse{}, err
				}
				dk, sealed, err := k.GenerateDataKey(ctx, ref, n, q.EncryptionContext)
				if err != nil {
					return awskms.GenerateDataKeyResponse{}, err
				}
				noteKey(ctx, sealed.KeyID, sealed.KeyVersion)
				resp := awskms.GenerateDataKeyResponse{CiphertextBlob: sealed.Ciphertext, KeyId: d.cfg.KeyARN(sealed.KeyID)}
				if withPlain {
					resp.Plaintext = dk
				} else {
					clear(dk)
				}
				return resp, nil
			})
	}
	awsOp(s, "ReEncrypt", "kms:ReEncrypt", route{selfAuthz: true},
		func(_ *http.Request, q *awsReEncrypt) string { return ciphertextKey(q.CiphertextBlob) },
		func(ctx context.Context, r *http.Request, p auth.Principal, q *awsReEncrypt) (awskms.ReEncryptResponse, error) {
			if err := s.preAuthorize(&p, "kms:ReEncrypt"); err != nil {
				return awskms.ReEncryptResponse{}, err
			}
			if len(q.CiphertextBlob) == 0 {
				return awskms.ReEncryptResponse{}, awsErr("ValidationException", "CiphertextBlob is required")
			}
			if err := errors.Join(checkAlgorithm("SourceEncryptionAlgorithm", q.SourceEncryptionAlgorithm),
				checkAlgorithm("DestinationEncryptionAlgorithm", q.DestinationEncryptionAlgorithm)); err != nil {
				return awskms.ReEncryptResponse{}, err
			}
			dst, err := d.ref(q.DestinationKeyId)
			if err != nil {
				return awskms.ReEncryptResponse{}, err
			}
			rq := q.restForm().(*client.ReEncryptRequest)
			rq.DestinationKeyID = dst
			if err := s.authorizeReEncrypt(ctx, r, &p, rq); err != nil {
				return awskms.ReEncryptResponse{}, err
			}
			// Only once both halves are allowed: before, its answers
			// (NotFound, IncorrectKey) would tell a caller refused the
			// source key which names exist and where an alias points.
			if _, err := s.awsExpectKey(q.SourceKeyId, q.CiphertextBlob); err != nil {
				return awskms.ReEncryptResponse{}, err
			}
			if err := dryRun(q.DryRun); err != nil {
				return awskms.ReEncryptResponse{}, err
			}
			src, out, err := k.ReEncrypt(ctx, rq.Ciphertext, rq.SourceContext, rq.DestinationKeyID, rq.DestinationContext)
			if err != nil {
				return awskms.ReEncryptResponse{}, err
			}
			noteKey(ctx, out.KeyID, out.KeyVersion)
			return awskms.ReEncryptResponse{CiphertextBlob: out.Ciphertext, SourceKeyId: d.cfg.KeyARN(src.KeyID), KeyId: d.cfg.KeyARN(out.KeyID),
				SourceEncryptionAlgorithm: symmetricDefault, DestinationEncryptionAlgorithm: symmetricDefault}, nil
		})
	awsOp(s, "GenerateRandom", "kms:GenerateRandom", route{}, nil,
		func(_ context.Context, _ *http.Request, _ auth.Principal, q *awskms.GenerateRandomRequest) (awskms.GenerateRandomResponse, error) {
			if q.CustomKeyStoreId != "" {
				return awskms.GenerateRandomResponse{}, awsErr("ValidationException", "Coffer has no custom key stores")
			}
			b, err := keys.GenerateRandom(q.NumberOfBytes)
			return awskms.GenerateRandomResponse{Plaintext: b}, err
		})

	// Keys.
	awsOp(s, "DescribeKey", "key:Describe", route{},
		func(_ *http.Request, q *awskms.DescribeKeyRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.DescribeKeyRequest) (awskms.KeyMetadataResponse, error) {
			ref, err := d.ref(q.KeyId)
			if err != nil {
				return awskms.KeyMetadataResponse{}, err
			}
			key, err := k.Describe(ctx, ref)
			return d.metadataAnswer(ctx, key, err)
		})
	awsOp(s, "ListKeys", "key:List", route{}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.ListRequest) (awskms.ListKeysResponse, error) {
			if q.KeyId != "" {
				return awskms.ListKeysResponse{}, awsErr("ValidationException", "ListKeys takes no KeyId")
			}
			ks, next, err := page(k.List(ctx), func(k keys.Key) string { return k.ID }, q.Limit, q.Marker)
			if err != nil {
				return awskms.ListKeysResponse{}, err
			}
			out := awskms.ListKeysResponse{Keys: make([]awskms.KeyListEntry, len(ks)), Truncated: next != "", NextMarker: next}
			for i, key := range ks {
				out.Keys[i] = awskms.KeyListEntry{KeyId: key.ID, KeyArn: d.cfg.KeyARN(key.ID)}
			}
			return out, nil
		})
	awsOp(s, "CreateKey", "key:Create", route{}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.CreateKeyRequest) (awskms.KeyMetadataResponse, error) {
			switch {
			case q.KeyUsage != "" && q.KeyUsage != "ENCRYPT_DECRYPT":
				return awskms.KeyMetadataResponse{}, awsErr("ValidationException", "KeyUsage %q: Coffer keys are ENCRYPT_DECRYPT", boundString(q.KeyUsage, 64))
			case q.KeySpec != "" && q.KeySpec != symmetricDefault, q.CustomerMasterKeySpec != "" && q.CustomerMasterKeySpec != symmetricDefault:
				return awskms.KeyMetadataResponse{}, awsErr("ValidationException", "KeySpec: Coffer keys are %s", symmetricDefault)
			case q.Origin != "" && q.Origin != "AWS_KMS":
				return awskms.KeyMetadataResponse{}, awsErr("ValidationException", "Origin %q: Coffer makes its own key material (AWS_KMS)", boundString(q.Origin, 64))
			case q.MultiRegion:
				return awskms.KeyMetadataResponse{}, awsErr("ValidationException", "Coffer has no multi-Region keys")
			case q.Policy != "":
				return awskms.KeyMetadataResponse{}, awsErr("ValidationException", "a key policy is set after creation, as a Coffer policy document (PUT /v1/keys/{key}/policy)")
			}
			tags, err := tagMap(q.Tags)
			if err != nil {
				return awskms.KeyMetadataResponse{}, err
			}
			key, err := k.Create(ctx, keys.CreateRequest{Description: q.Description, Tags: tags})
			return d.metadataAnswer(ctx, key, err)
		})
	lifecycle := []struct {
		op, action string
		fn         func(context.Context, string) (keys.Key, error)
	}{
		{"EnableKey", "key:Enable", k.Enable},
		{"DisableKey", "key:Disable", k.Disable},
		{"CancelKeyDeletion", "key:CancelDeletion", k.CancelDeletion},
		{"RotateKeyOnDemand", "key:Rotate", k.Rotate},
	}
	for _, l := range lifecycle {
		awsOp(s, l.op, l.action, route{},
			func(_ *http.Request, q *awskms.KeyRequest) string { return d.resource(q.KeyId) },
			func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.KeyRequest) (*awskms.KeyIdResponse, error) {
				ref, err := d.ref(q.KeyId)
				if err != nil {
					return nil, err
				}
				key, err := l.fn(ctx, ref)
				if err != nil {
					return nil, err
				}
				noteKey(ctx, key.ID, key.PrimaryVersion)
				if l.op == "EnableKey" || l.op == "DisableKey" {
					return &awskms.KeyIdResponse{}, nil // AWS answers {} (KeyId is omitted when empty)
				}
				return &awskms.KeyIdResponse{KeyId: d.cfg.KeyARN(key.ID)}, nil
			})
	}
	awsOp(s, "ScheduleKeyDeletion", "key:ScheduleDeletion", route{},
		func(_ *http.Request, q *awskms.ScheduleKeyDeletionRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.ScheduleKeyDeletionRequest) (awskms.ScheduleKeyDeletionResponse, error) {
			ref, err := d.ref(q.KeyId)
			if err != nil {
				return awskms.ScheduleKeyDeletionResponse{}, err
			}
			days := q.PendingWindowInDays
			if days == 0 {
				days = 30 // AWS's default window
			}
			key, err := k.ScheduleDeletion(ctx, ref, days)
			if err != nil {
				return awskms.ScheduleKeyDeletionResponse{}, err
			}
			noteKey(ctx, key.ID, key.PrimaryVersion)
			out := awskms.ScheduleKeyDeletionResponse{KeyId: d.cfg.KeyARN(key.ID), KeyState: string(key.State), PendingWindowInDays: days}
			if key.DeletionDate != nil {
				out.DeletionDate = epoch(*key.DeletionDate)
			}
			return out, nil
		})

	// Aliases: the REST door's calls (createAlias, deleteAlias), which
	// authorize the alias and its key.
	awsOp(s, "CreateAlias", "key:CreateAlias", route{selfAuthz: true},
		func(_ *http.Request, q *awskms.AliasRequest) string { return q.AliasName },
		func(ctx context.Context, r *http.Request, p auth.Principal, q *awskms.AliasRequest) (struct{}, error) {
			ref, err := d.ref(q.TargetKeyId)
			if err != nil {
				return struct{}{}, err
			}
			_, err = s.createAlias(ctx, r, &p, q.AliasName, ref)
			return struct{}{}, err
		})
	awsOp(s, "DeleteAlias", "key:DeleteAlias", route{selfAuthz: true},
		func(_ *http.Request, q *awskms.AliasRequest) string { return q.AliasName },
		func(ctx context.Context, r *http.Request, p auth.Principal, q *awskms.AliasRequest) (struct{}, error) {
			if q.TargetKeyId != "" {
				return struct{}{}, awsErr("ValidationException", "DeleteAlias takes no TargetKeyId")
			}
			return struct{}{}, s.deleteAlias(ctx, r, &p, q.AliasName)
		})
	awsOp(s, "ListAliases", "key:ListAliases", route{}, nil,
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.ListRequest) (awskms.ListAliasesResponse, error) {
			ref := ""
			if q.KeyId != "" {
				var err error
				if ref, err = d.ref(q.KeyId); err != nil {
					return awskms.ListAliasesResponse{}, err
				}
			}
			as, err := k.ListAliases(ctx, ref)
			if err != nil {
				return awskms.ListAliasesResponse{}, err
			}
			as, next, err := page(as, func(a keys.Alias) string { return a.Name }, q.Limit, q.Marker)
			if err != nil {
				return awskms.ListAliasesResponse{}, err
			}
			out := awskms.ListAliasesResponse{Aliases: make([]awskms.AliasListEntry, len(as)), Truncated: next != "", NextMarker: next}
			for i, a := range as {
				out.Aliases[i] = awskms.AliasListEntry{AliasName: a.Name, AliasArn: d.cfg.AliasARN(a.Name), TargetKeyId: a.KeyID}
			}
			return out, nil
		})

	s.awsAliasRoutes()   // UpdateAlias (awskms_alias.go)
	s.awsKeyPairRoutes() // GenerateDataKeyPair[WithoutPlaintext] (awskms_keypair.go)
	s.awsTagRoutes()
	s.awsKeyPolicyRoutes()

	// Rotation: a rotation period on the key (key:Update), read back with
	// key:Describe; on demand, key:Rotate (above).
	awsOp(s, "EnableKeyRotation", "key:Update", route{},
		func(_ *http.Request, q *awskms.EnableKeyRotationRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.EnableKeyRotationRequest) (struct{}, error) {
			days := q.RotationPeriodInDays
			if days == 0 {
				days = 365 // AWS's default period
			}
			return struct{}{}, d.setRotation(ctx, k, q.KeyId, strconv.Itoa(days)+"d")
		})
	awsOp(s, "DisableKeyRotation", "key:Update", route{},
		func(_ *http.Request, q *awskms.KeyRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.KeyRequest) (struct{}, error) {
			return struct{}{}, d.setRotation(ctx, k, q.KeyId, "")
		})
	awsOp(s, "GetKeyRotationStatus", "key:Describe", route{},
		func(_ *http.Request, q *awskms.KeyRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.KeyRequest) (awskms.KeyRotationStatusResponse, error) {
			ref, err := d.ref(q.KeyId)
			if err != nil {
				return awskms.KeyRotationStatusResponse{}, err
			}
			key, err := k.Describe(ctx, ref)
			if err != nil {
				return awskms.KeyRotationStatusResponse{}, err
			}
			noteKey(ctx, key.ID, key.PrimaryVersion)
			out := awskms.KeyRotationStatusResponse{KeyId: d.cfg.KeyARN(key.ID), KeyRotationEnabled: key.RotationPeriod > 0}
			if key.RotationPeriod > 0 {
				out.RotationPeriodInDays = int(key.RotationPeriod / (24 * time.Hour))
			}
			if key.NextRotationAt != nil {
				out.NextRotationDate = epoch(*key.NextRotationAt)
			}
			return out, nil
		})
}

// awsTagRoutes registers the tag operations: the key's tags, read with
// key:Describe and changed with key:Update. A change is one call of the
// key service (ChangeTags), applied to the stored record, so concurrent
// changes are all kept.
func (s *Server) awsTagRoutes() {
	d, k := &s.aws, s.sys.Keys
	change := func(ctx context.Context, keyID string, set map[string]string, remove []string) error {
		ref, err := d.ref(keyID)
		if err != nil {
			return err
		}
		key, err := k.ChangeTags(ctx, ref, set, remove)
		if errors.Is(err, keys.ErrTooManyTags) {
			return &awsTypedError{typ: "LimitExceededException", status: http.StatusBadRequest, err: err}
		}
		if err == nil {
			noteKey(ctx, key.ID, key.PrimaryVersion)
		}
		return err
	}
	awsOp(s, "TagResource", "key:Update", route{},
		func(_ *http.Request, q *awskms.TagResourceRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.TagResourceRequest) (struct{}, error) {
			add, err := tagMap(q.Tags)
			if err != nil {
				return struct{}{}, err
			}
			return struct{}{}, change(ctx, q.KeyId, add, nil)
		})
	awsOp(s, "UntagResource", "key:Update", route{},
		func(_ *http.Request, q *awskms.UntagResourceRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.UntagResourceRequest) (struct{}, error) {
			return struct{}{}, change(ctx, q.KeyId, nil, q.TagKeys)
		})
	awsOp(s, "ListResourceTags", "key:Describe", route{},
		func(_ *http.Request, q *awskms.ListRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.ListRequest) (awskms.ListResourceTagsResponse, error) {
			ref, err := d.ref(q.KeyId)
			if err != nil {
				return awskms.ListResourceTagsResponse{}, err
			}
			key, err := k.Describe(ctx, ref)
			if err != nil {
				return awskms.ListResourceTagsResponse{}, err
			}
			noteKey(ctx, key.ID, key.PrimaryVersion)
			all := make([]awskms.Tag, 0, len(key.Tags))
			for n, v := range key.Tags {
				all = append(all, awskms.Tag{TagKey: n, TagValue: v})
			}
			tags, next, err := page(all, func(t awskms.Tag) string { return t.TagKey }, q.Limit, q.Marker)
			if err != nil {
				return awskms.ListResourceTagsResponse{}, err
			}
			return awskms.ListResourceTagsResponse{Tags: tags, Truncated: next != "", NextMarker: next}, nil
		})
}

// awsKeyPolicyRoutes registers GetKeyPolicy and PutKeyPolicy: the key's
// Coffer key policy (docs/policy.md), under AWS's one policy name,
// "default".
func (s *Server) awsKeyPolicyRoutes() {
	d, k, im := &s.aws, s.sys.Keys, s.sys.IAM
	target := func(ctx context.Context, q *awskms.KeyPolicyRequest) (keys.Key, error) {
		if q.PolicyName != "" && q.PolicyName != "default" {
			return keys.Key{}, awsErr("ValidationException", "PolicyName %q: a key has one policy, \"default\"", boundString(q.PolicyName, 64))
		}
		ref, err := d.ref(q.KeyId)
		if err != nil {
			return keys.Key{}, err
		}
		return k.Describe(ctx, ref)
	}
	awsOp(s, "GetKeyPolicy", "key:GetKeyPolicy", route{},
		func(_ *http.Request, q *awskms.KeyPolicyRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.KeyPolicyRequest) (awskms.GetKeyPolicyResponse, error) {
			if q.Policy != "" {
				return awskms.GetKeyPolicyResponse{}, awsErr("ValidationException", "GetKeyPolicy takes no Policy")
			}
			key, err := target(ctx, q)
			if err != nil {
				return awskms.GetKeyPolicyResponse{}, err
			}
			noteKey(ctx, key.ID, key.PrimaryVersion)
			return awskms.GetKeyPolicyResponse{Policy: im.KeyPolicy(key.ID).Document, PolicyName: "default"}, nil
		})
	awsOp(s, "PutKeyPolicy", "key:PutKeyPolicy", route{},
		func(_ *http.Request, q *awskms.KeyPolicyRequest) string { return d.resource(q.KeyId) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *awskms.KeyPolicyRequest) (struct{}, error) {
			key, err := target(ctx, q)
			if err != nil {
				return struct{}{}, err
			}
			noteKey(ctx, key.ID, key.PrimaryVersion)
			if _, err := im.PutKeyPolicy(ctx, key.ID, q.Policy); err != nil {
				if status, _, _ := classify(err); status == http.StatusBadRequest {
					return struct{}{}, &awsTypedError{typ: "MalformedPolicyDocumentException", status: http.StatusBadRequest, err: err}
				}
				return struct{}{}, err
			}
			return struct{}{}, nil
		})
}

// awsExpectKey checks that the KeyId a Decrypt or ReEncrypt names (optional)
// is a key, the key the ciphertext names, and returns its reference: AWS
// answers a mismatch with IncorrectKeyException. The key service checks it
// again for Decrypt.
func (s *Server) awsExpectKey(keyID string, ct []byte) (string, error) {
	if keyID == "" {
		return "", nil
	}
	ref, err := s.aws.ref(keyID)
	if err != nil {
		return "", err
	}
	// A KeyId that names no key is refused here: ReEncrypt passes it no
	// further, so it would otherwise be ignored.
	id, _, err := s.sys.Keys.Names(ref)
	if err != nil {
		return "", err
	}
	if made := ciphertextKey(ct); made != "" && made != id {
		return "", awsErr("IncorrectKeyException", "the ciphertext was made with key %s, not %s", made, boundString(keyID, 300))
	}
	return ref, nil
}

// setRotation sets the rotation period of the key KeyId names ("" for
// none).
func (d *awsKMSDoor) setRotation(ctx context.Context, k *keys.Service, keyID, period string) error {
	ref, err := d.ref(keyID)
	if err != nil {
		return err
	}
	key, err := k.Update(ctx, ref, keys.UpdateRequest{RotationPeriod: &period})
	if err == nil {
		noteKey(ctx, key.ID, key.PrimaryVersion)
	}
	return err
}

// tagMap is AWS's tag list as Coffer's tag map; a key given twice is
// refused.
func tagMap(tags []awskms.Tag) (map[string]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		if _, dup := m[t.TagKey]; dup {
			return nil, awsErr("TagException", "tag %q is given twice", boundString(t.TagKey, 128))
		}
		if strings.HasPrefix(strings.ToLower(t.TagKey), "aws:") {
			// As in AWS: tools take aws: tags for AWS's own.
			return nil, awsErr("TagException", "tag %q: tag keys beginning with aws: are reserved", boundString(t.TagKey, 128))
		}
		m[t.TagKey] = t.TagValue
	}
	return m, nil
}
