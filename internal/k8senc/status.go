package k8senc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cofferkms/coffer/internal/kmsplugin"
)

// DefaultPrefix is where the kube-apiserver keeps its objects in etcd
// (--etcd-prefix, default /registry).
const DefaultPrefix = "/registry/"

// KV is one stored key and its value.
type KV struct {
	Key   string
	Value []byte
}

// Source pages through a key range: the keys in [start, end) in order, at
// most limit of them, at revision rev (0 means the latest; the answer says
// which revision it read so the next pages can use the same one). more
// reports whether keys are left after the page.
type Source interface {
	Page(ctx context.Context, start, end string, limit, rev int64) (kvs []KV, more bool, atRev int64, err error)
}

// EtcdSource reads pages from etcd with the v3 client. It only issues
// range reads.
type EtcdSource struct{ KV clientv3.KV }

// Page implements Source.
func (s EtcdSource) Page(ctx context.Context, start, end string, limit, rev int64) ([]KV, bool, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit)}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	r, err := s.KV.Get(ctx, start, opts...)
	if err != nil {
		return nil, false, 0, err
	}
	kvs := make([]KV, len(r.Kvs))
	for i, kv := range r.Kvs {
		kvs[i] = KV{Key: string(kv.Key), Value: kv.Value}
	}
	return kvs, r.More, r.Header.Revision, nil
}

// prefixEnd is the end of the key range of all keys starting with prefix.
func prefixEnd(prefix string) string {
	return clientv3.GetPrefixRangeEnd(prefix)
}

// Walk calls fn for every key under prefix, a page of at most pageSize keys
// at a time, all at the revision of the first page (a consistent snapshot).
func Walk(ctx context.Context, src Source, prefix string, pageSize int64, fn func(KV)) (int64, error) {
	if pageSize <= 0 {
		pageSize = 500
	}
	start, end := prefix, prefixEnd(prefix)
	var rev int64
	for {
		kvs, more, atRev, err := src.Page(ctx, start, end, pageSize, rev)
		if err != nil {
			return rev, fmt.Errorf("etcd range %s: %w", prefix, err)
		}
		if rev == 0 {
			rev = atRev
		}
		for _, kv := range kvs {
			fn(kv)
		}
		if !more || len(kvs) == 0 {
			return rev, nil
		}
		start = kvs[len(kvs)-1].Key + "\x00"
	}
}

// StatusOptions configure Status.
type StatusOptions struct {
	// Prefix is the apiserver's etcd prefix with a trailing slash; empty
	// means DefaultPrefix.
	Prefix string
	// Resources limits the report to these resources ("secrets",
	// "configmaps", "widgets.example.com"); empty means all.
	Resources []string
	// CurrentKeyID is the key_id new writes use. When empty, Status infers
	// it (see InferCurrentKeyID).
	CurrentKeyID string
	// CurrentKeyIDSource says where CurrentKeyID came from ("flag",
	// "plugin"), for the report.
	CurrentKeyIDSource string
	// Provider is the name of the kms v2 provider objects should be under
	// ("coffer"); empty accepts any kms v2 provider name.
	Provider string
	// PageSize is the etcd page size; 0 means 500.
	PageSize int64
}

// Row is one group of the report: the objects of one resource stored under
// one provider with one key_id.
type Row struct {
	Resource string `json:"resource"`
	Provider string `json:"provider"`
	KeyID    string `json:"key_id,omitempty"`
	Count    int    `json:"count"`
	// Stale is set when these objects still need a rewrite: plaintext,
	// another provider, or a kms v2 key_id that is not the current one.
	Stale bool `json:"stale"`
	// Invalid counts kms v2 values whose EncryptedObject did not parse.
	Invalid int `json:"invalid,omitempty"`
}

// Report is the answer of Status.
type Report struct {
	Revision           int64    `json:"revision"`
	CurrentKeyID       string   `json:"current_key_id"`
	CurrentKeyIDSource string   `json:"current_key_id_source"`
	Rows               []Row    `json:"rows"`
	Total              int      `json:"total"`
	Plaintext          int      `json:"plaintext"`
	Stale              int      `json:"stale"`
	Warnings           []string `json:"warnings,omitempty"`
}

// Status scans the objects under the prefix and reports how they are
// stored. It only reads.
func Status(ctx context.Context, src Source, opts StatusOptions) (*Report, error) {
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	type group struct{ resource, provider, keyID string }
	counts := map[group]*Row{}
	want := map[string]bool{}
	for _, r := range opts.Resources {
		want[r] = true
	}
	walk := func(p string) (int64, error) {
		return Walk(ctx, src, p, opts.PageSize, func(kv KV) {
			res := ResourceOf(prefix, kv.Key)
			if res == "" || (len(want) > 0 && !want[res]) {
				return
			}
			v := Classify(kv.Value)
			g := group{res, v.Provider(), v.KeyID}
			row := counts[g]
			if row == nil {
				row = &Row{Resource: res, Provider: g.provider, KeyID: v.KeyID}
				counts[g] = row
			}
			row.Count++
			if v.Invalid != "" {
				row.Invalid++
			}
		})
	}
	rep := &Report{CurrentKeyID: opts.CurrentKeyID, CurrentKeyIDSource: opts.CurrentKeyIDSource}
	var err error
	if len(want) > 0 {
		// Scan only the resources asked for: /registry/<resource>/ and,
		// for group resources, /registry/<group>/<resource>/.
		for _, p := range scanPrefixes(prefix, opts.Resources) {
			rev, err := walk(p)
			if err != nil {
				return nil, err
			}
			rep.Revision = max(rep.Revision, rev)
		}
	} else if rep.Revision, err = walk(prefix); err != nil {
		return nil, err
	}
	var keyIDs []string
	for g := range counts {
		if g.keyID != "" {
			keyIDs = append(keyIDs, g.keyID)
		}
	}
	if rep.CurrentKeyID == "" {
		id, why := InferCurrentKeyID(keyIDs)
		rep.CurrentKeyID = id
		if id != "" {
			rep.CurrentKeyIDSource = "inferred"
			rep.Warnings = append(rep.Warnings, "current key_id inferred from the stored objects (the newest version of the one Coffer key seen); right after a rotation no object carries the new key_id yet, so give --current-key-id or --plugin-health")
		} else if why != "" {
			rep.Warnings = append(rep.Warnings, why)
		}
	}
	for _, row := range counts {
		row.Stale = IsStale(Value{Type: typeOf(row.Provider), Name: nameOf(row.Provider), Version: versionOf(row.Provider), KeyID: row.KeyID}, rep.CurrentKeyID, opts.Provider)
		rep.Rows = append(rep.Rows, *row)
		rep.Total += row.Count
		if row.Provider == TypeIdentity {
			rep.Plaintext += row.Count
		}
		if row.Stale {
			rep.Stale += row.Count
		}
	}
	slices.SortFunc(rep.Rows, func(a, b Row) int {
		return cmpStrings(a.Resource, b.Resource, a.Provider, b.Provider, a.KeyID, b.KeyID)
	})
	return rep, nil
}

func cmpStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := strings.Compare(pairs[i], pairs[i+1]); c != 0 {
			return c
		}
	}
	return 0
}

func providerField(p string, i int) string {
	f := strings.SplitN(p, ":", 3)
	if i < len(f) {
		return f[i]
	}
	return ""
}
func typeOf(p string) string    { return providerField(p, 0) }
func versionOf(p string) string { return providerField(p, 1) }
func nameOf(p string) string    { return providerField(p, 2) }

// scanPrefixes returns the etcd prefixes that hold the given resources.
func scanPrefixes(prefix string, resources []string) []string {
	var out []string
	for _, r := range resources {
		out = append(out, prefix+r+"/")
		if res, grp, ok := strings.Cut(r, "."); ok {
			out = append(out, prefix+grp+"/"+res+"/")
		}
		if r == "endpoints" {
			out = append(out, prefix+"services/endpoints/")
		}
		if r == "services" {
			out = append(out, prefix+"services/specs/")
		}
	}
	// Drop prefixes covered by another one (services/ covers
	// services/specs/).
	slices.Sort(out)
	out = slices.Compact(out)
	var kept []string
	for _, p := range out {
		if len(kept) > 0 && strings.HasPrefix(p, kept[len(kept)-1]) {
			continue
		}
		kept = append(kept, p)
	}
	return kept
}

// IsStale reports whether a value still needs a rewrite: it is plaintext,
// under another provider type, under a kms v2 provider other than provider
// (when provider is not empty), or under a kms v2 key_id other than
// currentKeyID (when currentKeyID is known). With currentKeyID unknown, kms
// v2 values are not called stale.
func IsStale(v Value, currentKeyID, provider string) bool {
	if v.Type != TypeKMS || v.Version != "v2" {
		return true
	}
	if provider != "" && v.Name != provider {
		return true
	}
	return currentKeyID != "" && v.KeyID != currentKeyID
}

// InferCurrentKeyID guesses the key_id new writes use from the key_ids
// seen in storage. The rule is deliberately narrow: when every key_id is a
// Coffer key_id ("<key uuid>:<version>") of one and the same key, the
// highest version is current (Coffer versions only grow, and the plugin
// always encrypts with the newest). When there is exactly one key_id of
// another form, it is current. Otherwise it returns "" and the reason.
func InferCurrentKeyID(keyIDs []string) (string, string) {
	ids := slices.Compact(slices.Sorted(slices.Values(keyIDs)))
	switch len(ids) {
	case 0:
		return "", ""
	case 1:
		return ids[0], ""
	}
	var best string
	var bestVersion uint32
	var uuid string
	for _, id := range ids {
		u, v, err := kmsplugin.ParseKeyID(id)
		if err != nil {
			return "", fmt.Sprintf("%d different key_ids and not all are Coffer key_ids; give --current-key-id or --plugin-health to tell which one is current", len(ids))
		}
		if uuid != "" && u != uuid {
			return "", "key_ids of several Coffer keys are stored; give --current-key-id or --plugin-health to tell which one is current"
		}
		uuid = u
		if best == "" || v > bestVersion {
			best, bestVersion = id, v
		}
	}
	return best, ""
}

// PluginKeyID asks a running `coffer kms-plugin` for its current key_id:
// GET <healthURL>/readyz (the plugin's --health-addr) answers
// {"status":"ok","key_id":"..."}.
func PluginKeyID(ctx context.Context, healthURL string) (string, error) {
	u := strings.TrimSuffix(healthURL, "/")
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	if !strings.HasSuffix(u, "/readyz") {
		u += "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var r struct {
		Status string `json:"status"`
		KeyID  string `json:"key_id"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return "", fmt.Errorf("%s: %s: not the plugin's /readyz answer", u, resp.Status)
	}
	if r.KeyID == "" {
		if r.Error != "" {
			return "", fmt.Errorf("%s: plugin not ready and no key_id yet: %s", u, r.Error)
		}
		return "", errors.New(u + ": the plugin reports no key_id yet")
	}
	return r.KeyID, nil
}
