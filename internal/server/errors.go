package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/iam"
	"github.com/cofferkms/coffer/internal/k8sauth"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/secrets"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/etcd"
	"github.com/cofferkms/coffer/internal/sys"
)

// apiError is an error with its HTTP status and code decided.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, "invalid_request", fmt.Sprintf(format, args...)}
}

// errThrottled marks a refusal because the source failed authentication
// too often (429).
var errThrottled = errors.New("too many failed authentications from this source")

type throttleError struct{ retry time.Duration }

func (e *throttleError) Error() string {
	return fmt.Sprintf("%s; retry in %s", errThrottled, e.retry)
}
func (e *throttleError) Unwrap() error { return errThrottled }

func throttled(retry time.Duration) error { return &throttleError{retry: retry} }

// classes maps service errors to HTTP. This table is the only place where
// an error becomes a status code.
var classes = []struct {
	err    error
	status int
	code   string
}{
	{keys.ErrInvalidArgument, http.StatusBadRequest, "invalid_request"},
	{sys.ErrInvalidArgument, http.StatusBadRequest, "invalid_request"},
	{auth.ErrInvalidArgument, http.StatusBadRequest, "invalid_request"},
	{iam.ErrInvalidArgument, http.StatusBadRequest, "invalid_request"},
	{iam.ErrNotFound, http.StatusNotFound, "not_found"},
	{iam.ErrExists, http.StatusConflict, "already_exists"},
	{iam.ErrInUse, http.StatusConflict, "in_use"},
	{k8sauth.ErrUnavailable, http.StatusServiceUnavailable, "cluster_unavailable"},
	{keys.ErrTooLarge, http.StatusBadRequest, "plaintext_too_large"},
	{keys.ErrInvalidCiphertext, http.StatusBadRequest, "invalid_ciphertext"},
	{barrier.ErrBadShare, http.StatusBadRequest, "invalid_share"},
	{barrier.ErrInvalidRequest, http.StatusBadRequest, "invalid_request"},
	{barrier.ErrNoAttempt, http.StatusBadRequest, "no_attempt"},
	{barrier.ErrAttemptInProgress, http.StatusConflict, "attempt_in_progress"},
	{barrier.ErrMigrationPending, http.StatusConflict, "migration_pending"},
	{barrier.ErrNoMigration, http.StatusConflict, "no_migration_pending"},
	{barrier.ErrSealUnavailable, http.StatusServiceUnavailable, "seal_unavailable"},
	{errThrottled, http.StatusTooManyRequests, "too_many_auth_failures"},
	{auth.ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated"},
	{auth.ErrForbidden, http.StatusForbidden, "permission_denied"},
	{keys.ErrNotFound, http.StatusNotFound, "key_not_found"},
	{keys.ErrAliasNotFound, http.StatusNotFound, "alias_not_found"},
	{auth.ErrNotFound, http.StatusNotFound, "token_not_found"},
	{keys.ErrAliasExists, http.StatusConflict, "alias_exists"},
	{keys.ErrDisabled, http.StatusConflict, "key_disabled"},
	{keys.ErrPendingDeletion, http.StatusConflict, "key_pending_deletion"},
	{keys.ErrInvalidState, http.StatusConflict, "invalid_key_state"},
	{barrier.ErrAlreadyInitialized, http.StatusConflict, "already_initialized"},
	{storage.ErrConflict, http.StatusConflict, "conflict"},
	{keys.ErrDeleted, http.StatusGone, "key_deleted"},
	{secrets.ErrInvalidArgument, http.StatusBadRequest, "invalid_request"},
	{secrets.ErrTooLarge, http.StatusRequestEntityTooLarge, "secret_too_large"},
	{secrets.ErrNotFound, http.StatusNotFound, "secret_not_found"},
	{secrets.ErrVersionNotFound, http.StatusNotFound, "version_not_found"},
	{secrets.ErrConflict, http.StatusConflict, "cas_mismatch"},
	{secrets.ErrNotDeleted, http.StatusConflict, "secret_not_deleted"},
	{secrets.ErrDeleted, http.StatusGone, "secret_deleted"},
	{secrets.ErrDestroyed, http.StatusGone, "version_destroyed"},
	{secrets.ErrWindowEnded, http.StatusGone, "recovery_window_ended"},
	{secrets.ErrNoRotation, http.StatusConflict, "rotation_not_configured"},
	{secrets.ErrRotationPending, http.StatusConflict, "rotation_pending"},
	{secrets.ErrRotationFailed, http.StatusBadGateway, "rotation_failed"},
	{barrier.ErrSealed, http.StatusServiceUnavailable, "sealed"},
	{sys.ErrStale, http.StatusServiceUnavailable, "replica_stale"},
	{barrier.ErrKeyringMismatch, http.StatusServiceUnavailable, "keyring_mismatch"},
	{barrier.ErrNotInitialized, http.StatusServiceUnavailable, "not_initialized"},
	{context.Canceled, 499, "canceled"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout"},
}

// classify returns the status, code and client-safe message of err.
// Unclassified errors are server faults: their text stays in the log.
func classify(err error) (int, string, string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.code, ae.msg
	}
	// The cause (endpoints, gRPC detail) stays in the log.
	if errors.Is(err, etcd.ErrUnavailable) {
		return http.StatusServiceUnavailable, "storage_unavailable", "the storage cluster (etcd) did not answer; retry later (the server log has the reason under this request id)"
	}
	for _, c := range classes {
		if errors.Is(err, c.err) {
			// The code already names the class; the message keeps only
			// the specifics ("key not found: key X ..." -> "key X ...").
			return c.status, c.code, strings.TrimPrefix(err.Error(), c.err.Error()+": ")
		}
	}
	return http.StatusInternalServerError, "internal", "internal server error; the server log has the details under this request id"
}

// decodeError turns a JSON decoding failure into a message that says what to
// fix.
func decodeError(err error, v any, limit int64) error {
	var (
		syn  *json.SyntaxError
		typ  *json.UnmarshalTypeError
		b64  base64.CorruptInputError
		big  *http.MaxBytesError
		invU *json.InvalidUnmarshalError
	)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &apiError{http.StatusRequestTimeout, "request_timeout", "the request body did not arrive within the server's read timeout; send it without pauses"}
	case errors.Is(err, errShape):
		return &apiError{http.StatusBadRequest, "invalid_request", strings.TrimPrefix(err.Error(), errShape.Error()+": ")}
	case errors.Is(err, io.EOF):
		return badRequest("the request body is empty; send a JSON object (see docs/api.md)")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("the request body is truncated JSON")
	case errors.As(err, &big):
		return &apiError{http.StatusRequestEntityTooLarge, "body_too_large",
			fmt.Sprintf("the request body exceeds %d bytes; for large data use envelope encryption or smaller batches", limit)}
	case errors.As(err, &syn):
		return badRequest("malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field != "" {
			if ft := fieldType(reflect.TypeOf(v), typ.Field); ft != nil && ft.Kind() == reflect.Map && typ.Type != nil && typ.Type.Kind() != reflect.Map {
				// encoding/json names the map field, not the bad value in it.
				return badRequest("field %q must be an object with %s as each value; one value is a JSON %s", typ.Field, jsonKind(typ.Type), typ.Value)
			}
			return badRequest("field %q must be %s, not a JSON %s", typ.Field, jsonKind(typ.Type), typ.Value)
		}
		return badRequest("the request body must be a JSON object, not a JSON %s", typ.Value)
	case errors.As(err, &b64):
		return badRequest("a byte field (plaintext, ciphertext, ...) is not valid standard base64 (A-Z a-z 0-9 + / with = padding; not URL-safe, no line breaks): bad data at input byte %d", int64(b64))
	case errors.As(err, &invU):
		return err
	}
	if msg, ok := cutUnknown(err.Error()); ok {
		return badRequest("unknown field %s; check the field names in docs/api.md", msg)
	}
	return badRequest("cannot decode the request body: %v", err)
}

func cutUnknown(s string) (string, bool) {
	const p = "json: unknown field "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// fieldType follows a dotted JSON field path ("items.context", as
// encoding/json reports it) through the struct type t and returns the type
// of the field it names, or nil.
func fieldType(t reflect.Type, path string) reflect.Type {
	for name := range strings.SplitSeq(path, ".") {
		for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			t = t.Elem()
		}
		if t == nil || t.Kind() != reflect.Struct {
			return nil
		}
		var next reflect.Type
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == name || (tag == "" && strings.EqualFold(f.Name, name)) {
				next = f.Type
				break
			}
		}
		t = next
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a value"
}

func errorBody(code, msg, rid string) client.ErrorBody {
	return client.ErrorBody{Error: client.Error{Code: code, Message: msg, RequestID: rid}}
}
