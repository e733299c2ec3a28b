package awskms

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The protocol pieces of the STS door (AWS's Query protocol): form
// requests, XML answers and errors, role and assumed-role ARNs. It makes
// no decision about identities: the server routes each action through the
// same handler path as the REST API, and internal/iam decides.

// STSService is the signing name of the STS API in a credential scope.
const STSService = "sts"

// STSVersion is the one API version of the STS Query protocol.
const STSVersion = "2011-06-15"

// STSNamespace is the XML namespace of STS answers.
const STSNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"

// Bounds of AssumeRoleWithWebIdentity, as AWS has them.
const (
	MinSessionDuration     = 900 * time.Second
	MaxSessionDuration     = 43200 * time.Second
	DefaultSessionDuration = time.Hour
	maxWebIdentityToken    = 20000
	maxRoleARN             = 2048
)

// sessionNameRe is AWS's constraint on RoleSessionName.
var sessionNameRe = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

// ErrSTSParameter marks a request parameter STS refuses; the message
// says which and why.
var ErrSTSParameter = errors.New("invalid parameter")

// STSForm is a parsed STS request body: its Action and the action's
// parameters (Version checked).
type STSForm struct {
	Action string
	Params url.Values
}

// ParseSTSForm parses an STS request body. Every parameter must appear
// at most once; Version must be STSVersion.
func ParseSTSForm(body []byte) (STSForm, error) {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return STSForm{}, fmt.Errorf("%w: the body is not a well-formed application/x-www-form-urlencoded form", ErrSTSParameter)
	}
	for k, v := range vals {
		if len(v) > 1 {
			return STSForm{}, fmt.Errorf("%w: parameter %q is given %d times", ErrSTSParameter, truncate(k), len(v))
		}
	}
	f := STSForm{Action: vals.Get("Action"), Params: vals}
	if f.Action == "" {
		return f, fmt.Errorf("%w: the Action parameter is missing", ErrSTSParameter)
	}
	if v := vals.Get("Version"); v != STSVersion {
		return f, fmt.Errorf("%w: Version must be %s, not %q", ErrSTSParameter, STSVersion, truncate(v))
	}
	delete(vals, "Action")
	delete(vals, "Version")
	return f, nil
}

// Only refuses parameters other than allowed.
func (f STSForm) Only(allowed ...string) error {
	for k := range f.Params {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return fmt.Errorf("%w: %s takes no parameter %q", ErrSTSParameter, f.Action, truncate(k))
		}
	}
	return nil
}

// WebIdentityRequest is a decoded AssumeRoleWithWebIdentity.
type WebIdentityRequest struct {
	RoleARN     string
	Token       string
	SessionName string
	Duration    time.Duration
}

// ParseWebIdentity decodes and checks the parameters of
// AssumeRoleWithWebIdentity as AWS constrains them. A session policy
// (Policy, PolicyArns) and ProviderId are refused: Coffer's scope-down
// policies are its own documents, and the provider is Kubernetes.
func ParseWebIdentity(f STSForm) (WebIdentityRequest, error) {
	for k := range f.Params {
		if k == "Policy" || strings.HasPrefix(k, "PolicyArns.") || k == "ProviderId" {
			return WebIdentityRequest{}, fmt.Errorf("%w: %s is not supported: session policies and OAuth providers are not Coffer's (docs/aws-kms.md)", ErrSTSParameter, truncate(k))
		}
	}
	if err := f.Only("RoleArn", "RoleSessionName", "WebIdentityToken", "DurationSeconds"); err != nil {
		return WebIdentityRequest{}, err
	}
	q := WebIdentityRequest{RoleARN: f.Params.Get("RoleArn"), Token: f.Params.Get("WebIdentityToken"),
		SessionName: f.Params.Get("RoleSessionName"), Duration: DefaultSessionDuration}
	switch {
	case q.RoleARN == "":
		return q, fmt.Errorf("%w: RoleArn is required", ErrSTSParameter)
	case len(q.RoleARN) < 20 || len(q.RoleARN) > maxRoleARN:
		return q, fmt.Errorf("%w: RoleArn must be 20 to %d characters", ErrSTSParameter, maxRoleARN)
	case q.Token == "":
		return q, fmt.Errorf("%w: WebIdentityToken is required", ErrSTSParameter)
	case len(q.Token) < 4 || len(q.Token) > maxWebIdentityToken:
		return q, fmt.Errorf("%w: WebIdentityToken must be 4 to %d characters", ErrSTSParameter, maxWebIdentityToken)
	case q.SessionName == "":
		return q, fmt.Errorf("%w: RoleSessionName is required", ErrSTSParameter)
	case !sessionNameRe.MatchString(q.SessionName):
		return q, fmt.Errorf("%w: RoleSessionName %q must be 2 to 64 of the characters A-Z a-z 0-9 _ + = , . @ -", ErrSTSParameter, truncate(q.SessionName))
	}
	if d := f.Params.Get("DurationSeconds"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < int(MinSessionDuration/time.Second) || n > int(MaxSessionDuration/time.Second) {
			return q, fmt.Errorf("%w: DurationSeconds must be a number of seconds from %d to %d", ErrSTSParameter,
				int(MinSessionDuration/time.Second), int(MaxSessionDuration/time.Second))
		}
		q.Duration = time.Duration(n) * time.Second
	}
	return q, nil
}

// ErrRoleARN marks a RoleArn that is well-formed but not of this server's
// partition and account (AWS: AccessDenied, the role is not there).
var ErrRoleARN = errors.New("role ARN of another account")

// RoleName is the Coffer role a RoleArn names:
// arn:PARTITION:iam::ACCOUNT:role/NAME. A malformed ARN is ErrSTSParameter,
// one of another partition or account ErrRoleARN.
func (c Config) RoleName(arn string) (string, error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iam" || parts[3] != "" || parts[4] == "" {
		return "", fmt.Errorf("%w: RoleArn %q is not a role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)", ErrSTSParameter, truncate(arn))
	}
	name, ok := strings.CutPrefix(parts[5], "role/")
	if !ok || name == "" {
		return "", fmt.Errorf("%w: RoleArn %q is not a role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)", ErrSTSParameter, truncate(arn))
	}
	if parts[1] != c.Partition || parts[4] != c.Account {
		return "", fmt.Errorf("%w: RoleArn %q is not of this server's partition and account (%s, %s)", ErrRoleARN, truncate(arn), c.Partition, c.Account)
	}
	return name, nil
}

// AssumedRoleARN is the ARN of a session of role named session.
func (c Config) AssumedRoleARN(role, session string) string {
	return fmt.Sprintf("arn:%s:sts::%s:assumed-role/%s/%s", c.Partition, c.Account, role, session)
}

// UserARN is the ARN GetCallerIdentity gives an access key: an IAM user
// named after the key id.
func (c Config) UserARN(keyID string) string {
	return fmt.Sprintf("arn:%s:iam::%s:user/%s", c.Partition, c.Account, keyID)
}

// STSResult is the result of an STS action, answered inside
// <ActionResponse> with the request id.
type STSResult interface{ STSAction() string }

// STSCredentials are temporary credentials.
type STSCredentials struct {
	AccessKeyId     string
	SecretAccessKey string
	SessionToken    string
	Expiration      string // RFC 3339, UTC
}

// AssumedRoleUser names a session.
type AssumedRoleUser struct {
	Arn           string
	AssumedRoleId string
}

// WebIdentityResult is the answer of AssumeRoleWithWebIdentity.
type WebIdentityResult struct {
	XMLName                     xml.Name `xml:"AssumeRoleWithWebIdentityResult"`
	Credentials                 STSCredentials
	SubjectFromWebIdentityToken string
	AssumedRoleUser             AssumedRoleUser
	PackedPolicySize            int `xml:",omitempty"`
	Provider                    string
	Audience                    string
}

// STSAction implements STSResult.
func (WebIdentityResult) STSAction() string { return "AssumeRoleWithWebIdentity" }

// CallerIdentityResult is the answer of GetCallerIdentity.
type CallerIdentityResult struct {
	XMLName xml.Name `xml:"GetCallerIdentityResult"`
	UserId  string
	Account string
	Arn     string
}

// STSAction implements STSResult.
func (CallerIdentityResult) STSAction() string { return "GetCallerIdentity" }

// stsResponse is the envelope of an answer.
type stsResponse struct {
	XMLName   xml.Name
	Xmlns     string `xml:"xmlns,attr"`
	Result    STSResult
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

// MarshalSTS encodes the answer of res with requestID.
func MarshalSTS(res STSResult, requestID string) ([]byte, error) {
	b, err := xml.Marshal(stsResponse{XMLName: xml.Name{Local: res.STSAction() + "Response"}, Xmlns: STSNamespace, Result: res, RequestID: requestID})
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), b...), nil
}

// stsError is the envelope of an error.
type stsError struct {
	XMLName   xml.Name `xml:"ErrorResponse"`
	Xmlns     string   `xml:"xmlns,attr"`
	Type      string   `xml:"Error>Type"`
	Code      string   `xml:"Error>Code"`
	Message   string   `xml:"Error>Message"`
	RequestID string   `xml:"RequestId"`
}

// MarshalSTSError encodes an error: Type Sender for a client's fault
// (status below 500), Receiver for the server's.
func MarshalSTSError(status int, code, msg, requestID string) []byte {
	typ := "Sender"
	if status >= 500 {
		typ = "Receiver"
	}
	b, err := xml.Marshal(stsError{Xmlns: STSNamespace, Type: typ, Code: code, Message: msg, RequestID: requestID})
	if err != nil {
		b = []byte("<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code></Error></ErrorResponse>")
	}
	return append([]byte(xml.Header), b...)
}
