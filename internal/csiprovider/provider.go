// Package csiprovider is Coffer's provider for the Kubernetes Secrets Store
// CSI Driver: a gRPC service (the driver's provider API,
// sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1) on a unix socket
// of each node. When a pod mounts a volume of the secrets-store driver, the
// driver calls Mount with the SecretProviderClass parameters and the pod's
// service-account token; the provider logs in to Coffer with that token (a
// Kubernetes login, as workload identity does), reads the named secrets as
// the pod and returns them as files, which the driver writes into the pod's
// volume. No Kubernetes Secret is created.
//
// A Mount is all or nothing: if one secret cannot be read, or the request
// is malformed, no file is returned. Tokens and values are never logged nor
// put in an error.
package csiprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/cofferkms/coffer/client"
)

// Attribute keys the driver adds to the SecretProviderClass parameters.
const (
	AttrPodName        = "csi.storage.k8s.io/pod.name"
	AttrPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	AttrServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	AttrTokens         = "csi.storage.k8s.io/serviceAccount.tokens"
)

// Parameters of a SecretProviderClass that the provider reads.
const (
	ParamAddress  = "cofferAddress"
	ParamRole     = "role"
	ParamAudience = "audience"
	ParamCluster  = "cluster"
	ParamObjects  = "objects"
)

// Limits on a Mount request.
const (
	// MaxAttributes bounds the attributes JSON.
	MaxAttributes = 256 << 10
	// MaxObjects bounds the objects of one SecretProviderClass.
	MaxObjects = 64
	// MaxFiles bounds the files of one mount (a secret without field
	// gives one file per field).
	MaxFiles = 256
	// MaxTotalBytes bounds the contents of all files, below the driver's
	// default 4 MiB gRPC message limit.
	MaxTotalBytes = 3 << 20
	// MaxPath bounds a file's relative path.
	MaxPath = 1024
	// DefaultAudience is the audience of the service-account token used
	// when the SecretProviderClass names none and the driver passes
	// several.
	DefaultAudience = "coffer"
	// DefaultMode is the file mode when the driver sends no permission.
	DefaultMode = 0o644
)

// RuntimeName is the provider's name in VersionResponse.
const RuntimeName = "coffer"

// Config configures a Provider.
type Config struct {
	// Address is the Coffer server used when a SecretProviderClass has no
	// cofferAddress parameter.
	Address string
	// AllowedAddresses are other Coffer servers a SecretProviderClass may
	// name in cofferAddress. Any other is refused: a class's author must not
	// make the node's provider send pods' tokens, or requests at all, to an
	// address of their choosing.
	AllowedAddresses []string
	// Cluster is the registered cluster name sent with each login when the
	// SecretProviderClass has no cluster parameter (optional: the token's
	// issuer names the cluster).
	Cluster string
	// NewClient builds a Coffer client for address that sends token ("":
	// none).
	NewClient func(address, token string) (*client.Client, error)
	// Timeout bounds one Mount (default 30s).
	Timeout time.Duration
	// Version is the provider's version in VersionResponse.
	Version string
	Logger  *slog.Logger
}

// Provider implements the driver's CSIDriverProviderServer.
type Provider struct {
	v1alpha1.UnimplementedCSIDriverProviderServer
	cfg Config
}

var _ v1alpha1.CSIDriverProviderServer = (*Provider)(nil)

// New returns a provider.
func New(cfg Config) *Provider {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Version == "" {
		cfg.Version = "0.0.0"
	}
	if cfg.NewClient == nil {
		cfg.NewClient = func(address, token string) (*client.Client, error) {
			return client.New(address, client.WithToken(token), client.WithDoor("csi-provider"))
		}
	}
	return &Provider{cfg: cfg}
}

// Version answers the driver's version probe.
func (p *Provider) Version(context.Context, *v1alpha1.VersionRequest) (*v1alpha1.VersionResponse, error) {
	return &v1alpha1.VersionResponse{Version: "v1alpha1", RuntimeName: RuntimeName, RuntimeVersion: p.cfg.Version}, nil
}

// Object is one entry of the objects parameter.
type Object struct {
	// Secret is the secret's name.
	Secret string `json:"secret"`
	// Field, when set, makes one file of that field; otherwise every field
	// of the secret is a file under the directory Path.
	Field string `json:"field,omitempty"`
	// Version reads that version; Stage reads current (default) or previous.
	Version uint32 `json:"version,omitempty"`
	Stage   string `json:"stage,omitempty"`
	// Path is the file (or directory) in the volume: default Field, or the
	// secret's last name segment.
	Path string `json:"path,omitempty"`
}

// request is a validated Mount request.
type request struct {
	address, role, cluster, jwt string
	podNamespace, podName       string
	mode                        int32
	objects                     []Object
}

func invalid(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}

// parse validates a Mount request without any network call.
func (p *Provider) parse(req *v1alpha1.MountRequest) (*request, error) {
	if len(req.GetAttributes()) > MaxAttributes {
		return nil, invalid("attributes are %d bytes, more than the limit of %d", len(req.GetAttributes()), MaxAttributes)
	}
	var attrs map[string]string
	if err := json.Unmarshal([]byte(req.GetAttributes()), &attrs); err != nil {
		return nil, invalid("attributes are not a JSON object of strings: %v", err)
	}
	r := &request{
		address:      attrs[ParamAddress],
		role:         attrs[ParamRole],
		cluster:      attrs[ParamCluster],
		podNamespace: attrs[AttrPodNamespace],
		podName:      attrs[AttrPodName],
		mode:         DefaultMode,
	}
	if r.address == "" {
		r.address = p.cfg.Address
	} else if r.address != p.cfg.Address && !slices.Contains(p.cfg.AllowedAddresses, r.address) {
		return nil, invalid("%s %q is not a Coffer server this provider may call: the provider's --address, or one of its --allowed-address", ParamAddress, r.address)
	}
	if r.address == "" {
		return nil, invalid("no Coffer address: set the %s parameter of the SecretProviderClass or the provider's --address", ParamAddress)
	}
	if r.cluster == "" {
		r.cluster = p.cfg.Cluster
	}
	if r.role == "" {
		return nil, invalid("the %s parameter is required: the Coffer role the pod's service account logs in to", ParamRole)
	}
	if perm := req.GetPermission(); perm != "" {
		var mode int64
		if err := json.Unmarshal([]byte(perm), &mode); err != nil || mode < 0 || mode > 0o777 {
			return nil, invalid("permission %q: want a decimal file mode between 0 and 511", perm)
		}
		r.mode = int32(mode)
	}
	jwt, err := pickToken(attrs[AttrTokens], attrs[ParamAudience])
	if err != nil {
		return nil, err
	}
	r.jwt = jwt
	if r.objects, err = parseObjects(attrs[ParamObjects]); err != nil {
		return nil, err
	}
	return r, nil
}

// pickToken chooses the service-account token for audience from the
// driver's tokens attribute ({audience: {token, expirationTimestamp}}).
func pickToken(raw, audience string) (string, error) {
	if raw == "" {
		return "", status.Errorf(codes.InvalidArgument, "the driver passed no service-account token: set tokenRequests (audience %q) on the secrets-store.csi.k8s.io CSIDriver", DefaultAudience)
	}
	var toks map[string]struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(raw), &toks); err != nil {
		return "", invalid("%s is not a JSON map of audience to token", AttrTokens)
	}
	if audience == "" {
		if len(toks) == 1 {
			for a := range toks {
				audience = a
			}
		} else {
			audience = DefaultAudience
		}
	}
	t, ok := toks[audience]
	if !ok || t.Token == "" {
		have := make([]string, 0, len(toks))
		for a := range toks {
			have = append(have, strconv.Quote(a))
		}
		return "", invalid("no service-account token for audience %q (the driver passed audiences [%s]): add it to the CSIDriver's tokenRequests or set the %s parameter", audience, strings.Join(have, ", "), ParamAudience)
	}
	return t.Token, nil
}

// parseObjects reads the objects parameter (a YAML or JSON list).
func parseObjects(raw string) ([]Object, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, invalid("the %s parameter is required: a list of secrets such as \"- secret: team-a/db\\n  field: password\"", ParamObjects)
	}
	var objs []Object
	if err := yaml.UnmarshalStrict([]byte(raw), &objs); err != nil {
		return nil, invalid("%s: %v", ParamObjects, err)
	}
	if len(objs) == 0 {
		return nil, invalid("%s lists no secret", ParamObjects)
	}
	if len(objs) > MaxObjects {
		return nil, invalid("%s lists %d secrets, more than the limit of %d", ParamObjects, len(objs), MaxObjects)
	}
	for i := range objs {
		o := &objs[i]
		if o.Secret == "" {
			return nil, invalid("%s[%d]: secret is required", ParamObjects, i)
		}
		if err := checkSecretName(o.Secret); err != nil {
			return nil, invalid("%s[%d]: secret %q is not a secret name: %v", ParamObjects, i, o.Secret, err)
		}
		switch o.Stage {
		case "", "current", "previous":
		default:
			return nil, invalid("%s[%d]: stage %q: want current or previous", ParamObjects, i, o.Stage)
		}
		if o.Version != 0 && o.Stage != "" {
			return nil, invalid("%s[%d]: give version or stage, not both", ParamObjects, i)
		}
		if o.Path == "" {
			o.Path = o.Field
			if o.Path == "" {
				o.Path = path.Base(o.Secret)
			}
		}
		if err := checkPath(o.Path); err != nil {
			return nil, invalid("%s[%d] (secret %q): path %s", ParamObjects, i, o.Secret, err)
		}
	}
	return objs, nil
}

// checkSecretName refuses a name the server would not read as written
// (an empty, . or .. segment would be cleaned or redirected on the way).
func checkSecretName(name string) error {
	if strings.Contains(name, "#") {
		return errors.New("# is not part of a name")
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errors.New("empty, . and .. segments are not allowed")
		}
	}
	return nil
}

// checkPath refuses a file path that could leave the volume or is not a
// plain relative path.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("is empty")
	case len(p) > MaxPath:
		return fmt.Errorf("is longer than %d bytes", MaxPath)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q is absolute: give a path relative to the volume", p)
	case strings.ContainsAny(p, "\\\x00"):
		return fmt.Errorf("%q holds a backslash or NUL", p)
	}
	for _, seg := range strings.Split(p, "/") {
		switch {
		case seg == "..":
			return fmt.Errorf("%q leaves the volume (..)", p)
		case seg == "" || seg == ".":
			return fmt.Errorf("%q is not a clean path (empty or . segment)", p)
		case strings.HasPrefix(seg, ".."):
			// The driver keeps its own ..data and ..timestamp entries.
			return fmt.Errorf("%q has a segment starting with .., which the driver reserves", p)
		}
	}
	return nil
}

// objectID names an object in object_version: the secret, its field after
// #, and the version or stage asked for after @ (none: current).
func objectID(o Object) string {
	id := o.Secret
	if o.Field != "" {
		id += "#" + o.Field
	}
	switch {
	case o.Version != 0:
		id += "@v" + strconv.FormatUint(uint64(o.Version), 10)
	case o.Stage == "previous":
		id += "@previous"
	}
	return id
}

// Mount logs in as the pod and returns the secrets as files.
func (p *Provider) Mount(ctx context.Context, req *v1alpha1.MountRequest) (*v1alpha1.MountResponse, error) {
	start := time.Now()
	r, err := p.parse(req)
	if err != nil {
		p.cfg.Logger.Warn("mount refused", "error", status.Convert(err).Message())
		return nil, err
	}
	log := p.cfg.Logger.With("pod", r.podNamespace+"/"+r.podName, "role", r.role)
	resp, err := p.mount(ctx, r)
	if err != nil {
		log.Warn("mount failed", "error", status.Convert(err).Message(), "took", time.Since(start).Round(time.Millisecond))
		return nil, err
	}
	log.Info("mounted", "objects", len(r.objects), "files", len(resp.Files), "took", time.Since(start).Round(time.Millisecond))
	return resp, nil
}

type readKey struct {
	name    string
	version uint32
	stage   string
}

func (p *Provider) mount(ctx context.Context, r *request) (*v1alpha1.MountResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	anon, err := p.cfg.NewClient(r.address, "")
	if err != nil {
		return nil, invalid("coffer address %q: %v", r.address, err)
	}
	login, err := anon.KubernetesLogin(ctx, client.KubernetesLoginRequest{Role: r.role, JWT: r.jwt, Cluster: r.cluster})
	if err != nil {
		return nil, status.Errorf(grpcCode(err), "logging in to role %q with the pod's service-account token: %v", r.role, err)
	}
	c, err := p.cfg.NewClient(r.address, login.Token)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "coffer client: %v", err)
	}
	// The role token served this mount only.
	defer func() {
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer rcancel()
		if err := c.RevokeSelf(rctx); err != nil {
			p.cfg.Logger.Debug("revoking the mount's role token", "error", err)
		}
	}()

	read := map[readKey]*client.SecretValue{}
	resp := &v1alpha1.MountResponse{}
	paths := map[string]string{} // path -> object id
	total := 0
	addFile := func(id, p string, contents []byte, mode int32) error {
		if other, dup := paths[p]; dup {
			return invalid("path %q is given by both %s and %s", p, other, id)
		}
		for q, other := range paths {
			if strings.HasPrefix(q, p+"/") || strings.HasPrefix(p, q+"/") {
				return invalid("path %q (%s) and %q (%s) cannot both exist: one is a directory of the other", p, id, q, other)
			}
		}
		if len(resp.Files) >= MaxFiles {
			return invalid("the mount has more than %d files", MaxFiles)
		}
		total += len(contents)
		if total > MaxTotalBytes {
			return invalid("the files total more than %d bytes", MaxTotalBytes)
		}
		paths[p] = id
		resp.Files = append(resp.Files, &v1alpha1.File{Path: p, Mode: mode, Contents: contents})
		return nil
	}
	for _, o := range r.objects {
		id := objectID(o)
		k := readKey{o.Secret, o.Version, o.Stage}
		v := read[k]
		if v == nil {
			v, err = c.SecretGet(ctx, o.Secret, client.SecretGetOptions{Version: o.Version, Stage: o.Stage})
			if err != nil {
				return nil, status.Errorf(grpcCode(err), "cannot read secret %q: %v; no file was mounted", o.Secret, err)
			}
			read[k] = v
		}
		if o.Field != "" {
			val, ok := v.Fields[o.Field]
			if !ok {
				return nil, status.Errorf(codes.NotFound, "secret %q (version %d) has no field %q; its fields are %s; no file was mounted", o.Secret, v.Version, o.Field, fieldNames(v))
			}
			if err := addFile(id, o.Path, []byte(val), r.mode); err != nil {
				return nil, err
			}
		} else {
			for _, f := range sortedFields(v) {
				fp := o.Path + "/" + f
				if err := checkPath(fp); err != nil {
					return nil, status.Errorf(codes.FailedPrecondition, "secret %q: field %q cannot be a file: path %v", o.Secret, f, err)
				}
				if err := addFile(id, fp, []byte(v.Fields[f]), r.mode); err != nil {
					return nil, err
				}
			}
		}
		resp.ObjectVersion = append(resp.ObjectVersion, &v1alpha1.ObjectVersion{Id: id, Version: strconv.FormatUint(uint64(v.Version), 10)})
	}
	ids := map[string]bool{}
	for _, ov := range resp.ObjectVersion {
		if ids[ov.Id] {
			return nil, invalid("object %s is listed twice", ov.Id)
		}
		ids[ov.Id] = true
	}
	return resp, nil
}

func sortedFields(v *client.SecretValue) []string {
	names := make([]string, 0, len(v.Fields))
	for f := range v.Fields {
		names = append(names, f)
	}
	slices.Sort(names)
	return names
}

func fieldNames(v *client.SecretValue) string {
	names := sortedFields(v)
	for i, n := range names {
		names[i] = strconv.Quote(n)
	}
	return "[" + strings.Join(names, ", ") + "]"
}

// grpcCode maps a Coffer client error to a gRPC code.
func grpcCode(err error) codes.Code {
	var ae *client.APIError
	if errors.As(err, &ae) {
		switch {
		case ae.StatusCode == http.StatusUnauthorized:
			return codes.Unauthenticated
		case ae.StatusCode == http.StatusForbidden:
			return codes.PermissionDenied
		case ae.StatusCode == http.StatusNotFound || ae.StatusCode == http.StatusGone:
			return codes.NotFound
		case ae.StatusCode == http.StatusTooManyRequests:
			return codes.ResourceExhausted
		case ae.StatusCode >= 400 && ae.StatusCode < 500:
			return codes.FailedPrecondition
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return codes.DeadlineExceeded
	}
	return codes.Unavailable
}
