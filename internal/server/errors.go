package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/storage"
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
	{keys.ErrTooLarge, http.StatusBadRequest, "plaintext_too_large"},
	{keys.ErrInvalidCiphertext, http.StatusBadRequest, "invalid_ciphertext"},
	{barrier.ErrBadShare, http.StatusBadRequest, "invalid_share"},
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
	{barrier.ErrSealed, http.StatusServiceUnavailable, "sealed"},
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
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.status, c.code, err.Error()
		}
	}
	return http.StatusInternalServerError, "internal", "internal server error; the server log has the details under this request id"
}

// decodeError turns a JSON decoding failure into a message that says what to
// fix.
func decodeError(err error, limit int64) error {
	var (
		syn  *json.SyntaxError
		typ  *json.UnmarshalTypeError
		b64  base64.CorruptInputError
		big  *http.MaxBytesError
		invU *json.InvalidUnmarshalError
	)
	switch {
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
			return badRequest("field %q must be %s, not a JSON %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
		}
		return badRequest("the request body must be a JSON object, not a JSON %s", typ.Value)
	case errors.As(err, &b64):
		return badRequest("a byte field (plaintext, ciphertext, ...) is not valid standard base64: bad data at input byte %d", int64(b64))
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

func jsonKind(k string) string {
	switch k {
	case "slice":
		return "a base64 string or an array"
	case "map", "struct":
		return "an object"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "ptr":
		return "a value"
	}
	return "a number"
}

func errorBody(code, msg, rid string) client.ErrorBody {
	return client.ErrorBody{Error: client.Error{Code: code, Message: msg, RequestID: rid}}
}
