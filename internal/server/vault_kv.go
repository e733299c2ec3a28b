package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/secrets"
)

// KV version 2 over the secrets manager: a KV path is a Coffer secret's
// name, a KV version a secret version, and the actions and resources are
// the REST door's (secret:Read, secret:Write, secret:List, secret:Delete
// on secret/NAME).

// vaultKVRequest is the body of every KV write; unknown fields are
// ignored, as Vault ignores them.
type vaultKVRequest struct {
	Data    map[string]any `json:"data"`
	Options struct {
		CAS *uint32 `json:"cas"`
	} `json:"options"`
	Versions vaultVersions `json:"versions"`
	// metadata/PATH
	MaxVersions        *int              `json:"max_versions"`
	CASRequired        bool              `json:"cas_required"`
	DeleteVersionAfter string            `json:"delete_version_after"`
	CustomMetadata     map[string]string `json:"custom_metadata"`
}

// UnmarshalJSON decodes leniently: unknown fields are ignored.
func (q *vaultKVRequest) UnmarshalJSON(b []byte) error {
	type plain vaultKVRequest
	return json.Unmarshal(b, (*plain)(q))
}

// vaultVersions are the versions of a delete, undelete or destroy: Vault
// takes numbers or numeric strings (the stock client sends strings).
type vaultVersions []uint32

// UnmarshalJSON takes [1, "2"].
func (vs *vaultVersions) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return badRequest("versions: want a list of version numbers")
	}
	out := make(vaultVersions, 0, len(raw))
	for _, x := range raw {
		var n uint32
		if err := json.Unmarshal(x, &n); err != nil {
			var str string
			if json.Unmarshal(x, &str) != nil {
				return badRequest("versions: want a list of version numbers")
			}
			v, err := strconv.ParseUint(str, 10, 32)
			if err != nil {
				return badRequest("versions: %q is not a version number", boundString(str, 16))
			}
			n = uint32(v)
		}
		out = append(out, n)
	}
	*vs = out
	return nil
}

// kvResource is the policy resource of a KV path: secret/PATH.
func kvResource[Req any](r *http.Request, _ *Req) string {
	return "secret/" + strings.Trim(r.PathValue("path"), "/")
}

// kvMetadataResource is kvResource for GET and LIST metadata/PATH: a list
// is decided on secret/PATH/ (the REST list's resource for the prefix
// PATH/), so a grant on secret/team/* lists team and a grant on the
// secret team does not. Only the metadata routes list: on any other, a
// ?list=true would move the decision onto another resource.
func kvMetadataResource(r *http.Request, req *empty) string {
	name := kvResource(r, req)
	if kvListing(r) && name != "secret/" {
		name += "/"
	}
	return name
}

// kvListing reports whether a metadata request is a list.
func kvListing(r *http.Request) bool {
	return r.Method == "LIST" || (r.Method == http.MethodGet && r.URL.Query().Get("list") == "true")
}

func kvName(r *http.Request) string { return r.PathValue("path") }

// vaultTime is Vault's time format; "" for the zero time.
func vaultTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// kvVersionMeta is data.metadata of a KV read or write.
func kvVersionMeta(version uint32, created, deleted time.Time, destroyed bool) map[string]any {
	return map[string]any{"version": version, "created_time": vaultTime(created), "deletion_time": vaultTime(deleted),
		"destroyed": destroyed, "custom_metadata": nil}
}

func (s *Server) vaultKVRoutes(mount string) {
	sec := s.sys.Secrets
	base := "/v1/" + mount
	rt := func(action string) route { return route{action: action, door: doorVault} }

	s.mux.HandleFunc("GET "+base+"/data/{path...}", vaultHandler(handle(s, rt("secret:Read"), kvResource[empty],
		func(ctx context.Context, r *http.Request, p auth.Principal, _ *empty) (vaultSecret, error) {
			version, err := queryUint32(r, "version")
			if err != nil {
				return vaultSecret{}, err
			}
			if rec := recordOf(ctx); rec != nil && version != 0 {
				rec.Detail = "requested " + requested(version, "")
			}
			v, err := sec.Get(ctx, kvName(r), version, "")
			if err != nil {
				return vaultSecret{}, err
			}
			recordSecretVersion(ctx, v.Version, v.KeyID, v.KeyVersion)
			if err := s.authorizeSecretKey(ctx, r, &p, &v); err != nil {
				return vaultSecret{}, err
			}
			data := make(map[string]any, len(v.Fields))
			for k, x := range v.Fields {
				data[k] = x
			}
			return vaultSecret{Data: map[string]any{"data": data, "metadata": kvVersionMeta(v.Version, v.CreatedAt, time.Time{}, false)}}, nil
		})))
	s.vaultWrite(base+"/data/{path...}", vaultBody(handle(s, rt("secret:Write"), kvResource[vaultKVRequest],
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *vaultKVRequest) (vaultSecret, error) {
			if req.Data == nil {
				return vaultSecret{}, badRequest("no data provided: send {\"data\": {...}}")
			}
			fields := make(map[string]string, len(req.Data))
			for k, x := range req.Data {
				str, ok := x.(string)
				if !ok {
					return vaultSecret{}, badRequest("data field %q is not a string: Coffer secrets hold string values (docs/vault-compat.md)", boundString(k, 128))
				}
				fields[k] = str
			}
			v, err := sec.Put(ctx, secrets.PutRequest{Name: kvName(r), Fields: fields, CAS: req.Options.CAS})
			if err != nil {
				return vaultSecret{}, err
			}
			recordSecretVersion(ctx, v.Version, v.KeyID, v.KeyVersion)
			return vaultSecret{Data: kvVersionMeta(v.Version, v.CreatedAt, time.Time{}, false)}, nil
		})))
	// Deleting the latest version, deleting versions and deleting the
	// metadata all soft-delete the secret (Coffer deletes whole secrets,
	// within a recovery window); undelete restores it.
	del := func(ctx context.Context, r *http.Request, _ auth.Principal, _ *vaultKVRequest) (noContent, error) {
		_, err := sec.Delete(ctx, kvName(r), 0)
		return noContent{}, err
	}
	s.mux.HandleFunc("DELETE "+base+"/data/{path...}", vaultHandler(handle(s, rt("secret:Delete"), kvResource[vaultKVRequest], del)))
	s.mux.HandleFunc("DELETE "+base+"/metadata/{path...}", vaultHandler(handle(s, rt("secret:Delete"), kvResource[vaultKVRequest], del)))
	// delete/PATH names versions; Vault leaves the others readable. Coffer
	// can only delete the whole secret, so a delete that does not name the
	// current version is refused: it would take away a value the caller
	// did not ask to delete.
	s.vaultWrite(base+"/delete/{path...}", vaultBody(handle(s, rt("secret:Delete"), kvResource[vaultKVRequest],
		func(ctx context.Context, r *http.Request, p auth.Principal, req *vaultKVRequest) (noContent, error) {
			m, err := sec.Describe(ctx, kvName(r))
			if err != nil {
				return noContent{}, err
			}
			if !slices.Contains(req.Versions, m.CurrentVersion) {
				return noContent{}, badRequest("Coffer deletes whole secrets: name the current version (%d) to delete %s; to remove old versions' data use destroy (docs/vault-compat.md)",
					m.CurrentVersion, boundString(kvName(r), 256))
			}
			return del(ctx, r, p, req)
		})))
	s.vaultWrite(base+"/undelete/{path...}", vaultBody(handle(s, rt("secret:Delete"), kvResource[vaultKVRequest],
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *vaultKVRequest) (noContent, error) {
			_, err := sec.Undelete(ctx, kvName(r))
			return noContent{}, err
		})))
	s.vaultWrite(base+"/destroy/{path...}", vaultBody(handle(s, rt("secret:Delete"), kvResource[vaultKVRequest],
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *vaultKVRequest) (noContent, error) {
			if rec := recordOf(ctx); rec != nil {
				vs := make([]string, 0, len(req.Versions))
				for _, v := range req.Versions {
					vs = append(vs, strconv.FormatUint(uint64(v), 10))
				}
				rec.Detail = boundString("destroy secret_versions="+strings.Join(vs, ","), maxMessage)
			}
			_, err := sec.Destroy(ctx, kvName(r), req.Versions)
			return noContent{}, err
		})))

	list := func(ctx context.Context, r *http.Request, p auth.Principal) (vaultSecret, error) {
		prefix := strings.Trim(kvName(r), "/")
		if prefix != "" {
			prefix += "/"
		}
		seen := map[string]bool{}
		var out []string
		after := ""
		for range 100 { // at most 100 pages of 1000 secrets
			page, err := sec.List(ctx, prefix, after, secrets.MaxListLimit)
			if err != nil {
				return vaultSecret{}, err
			}
			for _, e := range page.Secrets {
				// As the REST list: each name is shown only to a caller
				// allowed to list it.
				if s.authorizeItem(ctx, r, &p, "secret:List", "secret/"+e.Name, nil) != nil {
					continue
				}
				child := strings.TrimPrefix(e.Name, prefix)
				if i := strings.IndexByte(child, '/'); i >= 0 {
					child = child[:i+1]
				}
				if !seen[child] {
					seen[child] = true
					out = append(out, child)
				}
			}
			if page.Next == "" {
				break
			}
			after = page.Next
		}
		if len(out) == 0 {
			return vaultSecret{}, vaultNotFound("no secrets under " + boundString(prefix, 256))
		}
		sort.Strings(out)
		return vaultSecret{Data: map[string]any{"keys": out}}, nil
	}
	metadata := func(ctx context.Context, r *http.Request, p auth.Principal, _ *empty) (vaultSecret, error) {
		if kvListing(r) {
			return list(ctx, r, p)
		}
		m, err := sec.Describe(ctx, kvName(r))
		if err != nil {
			return vaultSecret{}, err
		}
		versions := make(map[string]any, len(m.Versions))
		oldest := uint32(0)
		for _, v := range m.Versions {
			if oldest == 0 || v.Version < oldest {
				oldest = v.Version
			}
			versions[strconv.FormatUint(uint64(v.Version), 10)] = map[string]any{"created_time": vaultTime(v.CreatedAt),
				"deletion_time": vaultTime(m.DeletedAt), "destroyed": v.Destroyed}
		}
		var custom any
		if len(m.Custom) > 0 {
			custom = m.Custom
		}
		return vaultSecret{Data: map[string]any{"current_version": m.CurrentVersion, "oldest_version": oldest, "max_versions": m.MaxVersions,
			"created_time": vaultTime(m.CreatedAt), "updated_time": vaultTime(m.UpdatedAt), "versions": versions, "cas_required": false,
			"delete_version_after": "0s", "custom_metadata": custom}}, nil
	}
	// Writing metadata sets max_versions and replaces custom_metadata
	// whole, as Vault does; cas_required and delete_version_after have no
	// Coffer counterpart and are refused unless off.
	s.vaultWrite(base+"/metadata/{path...}", vaultBody(handle(s, rt("secret:Write"), kvResource[vaultKVRequest],
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *vaultKVRequest) (noContent, error) {
			if req.CASRequired {
				return noContent{}, badRequest("cas_required is not supported: send options.cas on each write (docs/vault-compat.md)")
			}
			switch req.DeleteVersionAfter {
			case "", "0", "0s":
			default:
				return noContent{}, badRequest("delete_version_after is not supported (docs/vault-compat.md)")
			}
			u := secrets.MetadataUpdate{Set: req.CustomMetadata}
			if req.MaxVersions != nil && *req.MaxVersions != 0 {
				u.MaxVersions = req.MaxVersions
			}
			if req.CustomMetadata != nil {
				cur, err := sec.Describe(ctx, kvName(r))
				if err != nil {
					return noContent{}, err
				}
				for k := range cur.Custom {
					if _, keep := req.CustomMetadata[k]; !keep {
						u.Unset = append(u.Unset, k)
					}
				}
			}
			_, err := sec.UpdateMetadata(ctx, kvName(r), u)
			return noContent{}, err
		})))
	s.mux.HandleFunc("GET "+base+"/metadata/{path...}", vaultHandler(handle(s, rt("secret:List"), kvMetadataResource, metadata)))
	s.mux.HandleFunc("LIST "+base+"/metadata/{path...}", vaultHandler(handle(s, rt("secret:List"), kvMetadataResource, metadata)))
}
