package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/iam"
	"github.com/cofferkms/coffer/internal/k8sauth"
	"github.com/cofferkms/coffer/internal/server/awskms"
)

// The AWS STS door (docs/aws-kms.md, STS): AWS's Query protocol on the
// same listener, POST / with a form body (Action=...&Version=2011-06-15)
// and no X-Amz-Target. AssumeRoleWithWebIdentity exchanges a pod's
// service-account token for temporary credentials through the Kubernetes
// workload identity (internal/iam WebIdentitySession); GetCallerIdentity
// names the signer. Every action is a route of handle: the same
// authentication, audit (door "aws-sts"), login failure budgets and body
// limits as the other doors. This file holds the door's own: dispatch on
// the Action, the form and XML shapes, and the AWS error codes.

// doorAWSSTS is the audit door of the STS API.
const doorAWSSTS = "aws-sts"

// stsMaxBody bounds an STS request: a web-identity token (at most 20,000
// characters) form-encoded, with the other parameters. It is below
// smallBody, so these anonymous bodies never hold a share of a budget.
const stsMaxBody = 48 << 10

// awsSTSDoor is the door's actions by name.
type awsSTSDoor struct {
	ops map[string]http.HandlerFunc
	// refuse answers requests no action takes (malformed form, unknown
	// Action), audited as unknown routes of the door.
	refuse func(err error) http.HandlerFunc
}

// isSTSRequest reports whether r is for the STS door: POST / with a form
// body and no X-Amz-Target.
func isSTSRequest(r *http.Request) bool {
	if r.Method != http.MethodPost || r.URL.Path != "/" || r.Header.Get("X-Amz-Target") != "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// awsSTS dispatches a request of the door to its action. The form is read
// (bounded) to find the Action; the action's route reads it again from
// memory.
func (s *Server) awsSTS(w http.ResponseWriter, r *http.Request) {
	done, body, err := s.readBody(w, r, stsMaxBody)
	if err != nil {
		s.sts.refuse(err)(w, r)
		return
	}
	done()
	form, err := awskms.ParseSTSForm(body)
	if err != nil {
		err = stsParameter(err)
		if form.Action == "" {
			err = &awsTypedError{typ: "MissingAction", status: http.StatusBadRequest, err: err}
		}
		s.sts.refuse(err)(w, r)
		return
	}
	h, ok := s.sts.ops[form.Action]
	if !ok {
		s.sts.refuse(&awsTypedError{typ: "InvalidAction", status: http.StatusBadRequest,
			err: badRequest("unknown Action %q (docs/aws-kms.md lists the STS actions Coffer implements)", boundString(form.Action, 64))})(w, r)
		return
	}
	h(w, r)
}

// stsFormRequest is a request of the STS door, decoded from its form.
type stsFormRequest interface {
	fromForm(awskms.STSForm) error
}

// decodeBody decodes a request body: a form for the STS door's requests,
// JSON for every other.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	f, ok := v.(stsFormRequest)
	if !ok {
		return decode(w, r, v, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var big *http.MaxBytesError
		if errors.As(err, &big) {
			return &apiError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body is larger than %d bytes", limit)}
		}
		return badRequest("the request body could not be read")
	}
	form, err := awskms.ParseSTSForm(body)
	if err != nil {
		return stsParameter(err)
	}
	return stsParameter(f.fromForm(form))
}

// stsParameter makes a parameter STS refuses a client error
// (ValidationError), saying which and why.
func stsParameter(err error) error {
	if err == nil || !errors.Is(err, awskms.ErrSTSParameter) {
		return err
	}
	return badRequest("%s", strings.TrimPrefix(err.Error(), awskms.ErrSTSParameter.Error()+": "))
}

type stsCallerIdentity struct{}

func (*stsCallerIdentity) fromForm(f awskms.STSForm) error { return f.Only() }

type stsWebIdentity struct{ awskms.WebIdentityRequest }

func (q *stsWebIdentity) fromForm(f awskms.STSForm) (err error) {
	q.WebIdentityRequest, err = awskms.ParseWebIdentity(f)
	return err
}

// stsOp registers action op as a route of handle.
func stsOp[Req, Resp any](s *Server, op string, rt route, res resourceOf[Req], fn call[Req, Resp]) {
	rt.door, rt.limit = doorAWSSTS, stsMaxBody
	s.sts.ops[op] = handle(s, rt, res, fn)
}

func (s *Server) awsSTSRoutes() {
	d := &s.sts
	cfg := s.aws.cfg
	d.ops = map[string]http.HandlerFunc{}
	d.refuse = func(err error) http.HandlerFunc {
		return handle(s, route{action: unknownRoute, public: true, sealedOK: true, door: doorAWSSTS}, nil,
			func(context.Context, *http.Request, auth.Principal, *empty) (struct{}, error) {
				return struct{}{}, err
			})
	}
	im := s.sys.IAM

	// The role a RoleArn names, for authorization and audit: its name, or
	// the ARN as sent when it names none (the call then fails).
	roleOf := func(q *stsWebIdentity) string {
		if name, err := cfg.RoleName(q.RoleARN); err == nil {
			return name
		}
		return q.RoleARN
	}
	stsOp(s, "AssumeRoleWithWebIdentity", route{action: "auth:AssumeRole", public: true, login: true,
		loginKey: func(_ *http.Request, req any) string {
			q := req.(*stsWebIdentity)
			return iam.KubernetesLoginClaim(&iam.KubernetesLoginRequest{Role: roleOf(q), JWT: q.Token})
		}},
		func(_ *http.Request, q *stsWebIdentity) string { return "role/" + roleOf(q) },
		func(ctx context.Context, _ *http.Request, _ auth.Principal, q *stsWebIdentity) (awskms.WebIdentityResult, error) {
			role, err := cfg.RoleName(q.RoleARN)
			if errors.Is(err, awskms.ErrRoleARN) {
				return awskms.WebIdentityResult{}, &awsTypedError{typ: "AccessDenied", status: http.StatusForbidden, err: badRequest("%v", err)}
			}
			if err != nil {
				return awskms.WebIdentityResult{}, stsParameter(err)
			}
			tok, p, err := im.WebIdentitySession(ctx, iam.WebIdentityRequest{Role: role, JWT: q.Token, SessionName: q.SessionName, Duration: q.Duration})
			if err != nil {
				return awskms.WebIdentityResult{}, webIdentityError(err)
			}
			secret, err := s.sys.Tokens.SessionSecret(ctx, tok)
			if err != nil {
				return awskms.WebIdentityResult{}, err
			}
			defer clear(secret)
			iss, aud := verifiedClaims(q.Token)
			return awskms.WebIdentityResult{
				Credentials: awskms.STSCredentials{AccessKeyId: auth.SessionKeyID(p.Accessor), SecretAccessKey: string(secret),
					SessionToken: tok, Expiration: p.ExpiresAt.UTC().Format(time.RFC3339)},
				SubjectFromWebIdentityToken: "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount,
				AssumedRoleUser:             awskms.AssumedRoleUser{Arn: cfg.AssumedRoleARN(p.Role, q.SessionName), AssumedRoleId: p.Role + ":" + q.SessionName},
				Provider:                    iss,
				Audience:                    aud,
			}, nil
		})

	// Who signed: any authenticated caller may ask (token:LookupSelf).
	stsOp(s, "GetCallerIdentity", route{action: "token:LookupSelf"}, nil,
		func(_ context.Context, _ *http.Request, p auth.Principal, _ *stsCallerIdentity) (awskms.CallerIdentityResult, error) {
			out := awskms.CallerIdentityResult{Account: cfg.Account}
			switch {
			case p.Kind == auth.KindAccessKey:
				out.UserId, out.Arn = p.ID, cfg.UserARN(p.ID)
			case p.Attributes["session"] != "":
				session := p.Attributes["session"]
				out.UserId, out.Arn = p.Role+":"+session, cfg.AssumedRoleARN(p.Role, session)
			default:
				return out, badRequest("only access keys and temporary credentials sign requests")
			}
			return out, nil
		})
}

// webIdentityError gives a refused login its STS error code: a token that
// does not verify is InvalidIdentityToken, a service account the role does
// not trust (or a role that does not exist) AccessDenied, a cluster that
// cannot be asked IDPCommunicationError. The cause stays, for the audit
// and the login failure budget.
func webIdentityError(err error) error {
	switch status, _, _ := classify(err); {
	case errors.Is(err, k8sauth.ErrExpired):
		// Not InvalidIdentityToken, which the SDK retries with the same
		// token: the pod must read its projected token again.
		return &awsTypedError{typ: "ExpiredTokenException", status: http.StatusBadRequest, err: err}
	case status == http.StatusUnauthorized:
		return &awsTypedError{typ: "InvalidIdentityToken", status: http.StatusBadRequest, err: err}
	case status == http.StatusForbidden:
		return &awsTypedError{typ: "AccessDenied", status: http.StatusForbidden, err: err}
	case errors.Is(err, k8sauth.ErrUnavailable):
		return &awsTypedError{typ: "IDPCommunicationError", status: http.StatusBadRequest, err: err}
	}
	return err
}

// verifiedClaims reads the iss and first aud claims of a web-identity
// token that was verified.
func verifiedClaims(jwt string) (iss, aud string) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "", ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", ""
	}
	var c struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
	}
	if json.Unmarshal(b, &c) != nil {
		return "", ""
	}
	var one string
	var many []string
	switch {
	case json.Unmarshal(c.Aud, &one) == nil:
		aud = one
	case json.Unmarshal(c.Aud, &many) == nil && len(many) > 0:
		aud = many[0]
	}
	return c.Iss, aud
}

// stsCodes are the STS codes of the authentication failures the KMS door
// names in its own terms (awsAuthenticate).
var stsCodes = map[string]struct {
	code   string
	status int
}{
	"IncompleteSignatureException": {"IncompleteSignature", http.StatusBadRequest},
	"InvalidSignatureException":    {"SignatureDoesNotMatch", http.StatusForbidden},
	"UnrecognizedClientException":  {"InvalidClientTokenId", http.StatusForbidden},
	"ThrottlingException":          {"Throttling", http.StatusBadRequest},
}

// stsError is the HTTP status and STS error code of a failure, from its
// REST classification, as the real STS answers them.
func stsError(err error, status int, code string) (int, string) {
	var te *awsTypedError
	if errors.As(err, &te) {
		if c, ok := stsCodes[te.typ]; ok {
			return c.status, c.code
		}
		return te.status, te.typ
	}
	switch code {
	case "permission_denied":
		return http.StatusForbidden, "AccessDenied"
	case "unauthenticated":
		if errors.Is(err, awskms.ErrSignature) {
			return http.StatusForbidden, "SignatureDoesNotMatch"
		}
		if errors.Is(err, auth.ErrExpired) {
			return http.StatusBadRequest, "ExpiredToken"
		}
		return http.StatusForbidden, "InvalidClientTokenId"
	case "too_many_auth_failures":
		return http.StatusBadRequest, "Throttling"
	case "body_too_large":
		return http.StatusRequestEntityTooLarge, "ValidationError"
	}
	switch {
	case status == http.StatusInternalServerError:
		return status, "InternalFailure"
	case status >= 500:
		return http.StatusServiceUnavailable, "ServiceUnavailable"
	}
	return http.StatusBadRequest, "ValidationError"
}

// writeSTS writes a successful answer of the door, as text/xml.
func writeSTS(w http.ResponseWriter, status int, v any, requestID string) {
	res, ok := v.(awskms.STSResult)
	var b []byte
	var err error
	if ok {
		b, err = awskms.MarshalSTS(res, requestID)
	}
	if !ok || err != nil {
		writeSTSError(w, http.StatusInternalServerError, "InternalFailure", "response encoding failed", requestID)
		return
	}
	h := w.Header()
	h.Set("X-Amzn-RequestId", requestID)
	h.Set("Content-Type", "text/xml")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// writeSTSError writes a failure of the door in STS's shape.
func writeSTSError(w http.ResponseWriter, status int, code, msg, requestID string) {
	b := awskms.MarshalSTSError(status, code, msg, requestID)
	h := w.Header()
	h.Set("X-Amzn-RequestId", requestID)
	h.Set("Content-Type", "text/xml")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
