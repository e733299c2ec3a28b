package server

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/auth"
	"github.com/cofferkms/coffer/internal/keys"
	"github.com/cofferkms/coffer/internal/secrets"
)

// maxStageName bounds the stage a read names (current, previous,
// pending), checked before the request is recorded.
const maxStageName = 16

// secretResource is the policy resource of the secret a path names:
// secret/NAME, so policies match secret/team-a/* and
// secret/${principal.namespace}/*.
func secretResource[Req any](r *http.Request, _ *Req) string { return "secret/" + r.PathValue("name") }

// secretRoutes serve the secrets manager (docs/api.md, "Secrets"). Reads
// of values need secret:Read; metadata, history and lists secret:List;
// writes and metadata changes secret:Write; delete, undelete and destroy
// secret:Delete. Records name the secret and the version, never a value.
func (s *Server) secretRoutes() {
	sec := s.sys.Secrets
	m := s.mux
	m.HandleFunc("POST /v1/secrets/data/{name...}", handle(s, route{action: "secret:Write"}, secretResource[client.SecretPutRequest],
		func(ctx context.Context, r *http.Request, p auth.Principal, req *client.SecretPutRequest) (client.SecretVersion, error) {
			if req.Key != "" {
				// Naming a key is using it: the caller must be allowed to
				// make data keys under it for this secret (as AWS Secrets
				// Manager asks kms:GenerateDataKey of a customer key), or
				// secret:Write would let anyone use any key, past its key
				// policy. The default key is the service's own.
				ec := map[string]string{"coffer-secret": r.PathValue("name")}
				if err := s.authorizeItem(ctx, r, &p, "kms:GenerateDataKey", req.Key, ec); err != nil {
					return client.SecretVersion{}, err
				}
			}
			v, err := sec.Put(ctx, secrets.PutRequest{Name: r.PathValue("name"), Fields: req.Fields, Key: req.Key, CAS: req.CAS})
			if err != nil {
				return client.SecretVersion{}, err
			}
			recordSecretVersion(ctx, v.Version, v.KeyID, v.KeyVersion)
			return secretVersionOf(v), nil
		}))
	m.HandleFunc("GET /v1/secrets/data/{name...}", handle(s, route{action: "secret:Read"}, secretResource[empty],
		func(ctx context.Context, r *http.Request, p auth.Principal, _ *empty) (client.SecretValue, error) {
			version, err := queryUint32(r, "version")
			if err != nil {
				return client.SecretValue{}, err
			}
			stage := r.URL.Query().Get("stage")
			if len(stage) > maxStageName {
				// Before it reaches the audit record: the trail holds
				// what was asked, bounded.
				return client.SecretValue{}, badRequest("stage: want current, previous or pending")
			}
			if version != 0 && stage != "" {
				return client.SecretValue{}, badRequest("give a version or a stage, not both")
			}
			if rec := recordOf(ctx); rec != nil && (version != 0 || stage != "") {
				// What was asked for, also when the read fails.
				rec.Detail = "requested " + requested(version, stage)
			}
			v, err := sec.Get(ctx, r.PathValue("name"), version, stage)
			if err != nil {
				return client.SecretValue{}, err
			}
			recordSecretVersion(ctx, v.Version, v.KeyID, v.KeyVersion)
			if err := s.authorizeSecretKey(ctx, r, &p, &v); err != nil {
				return client.SecretValue{}, err
			}
			return client.SecretValue{Name: v.Name, Version: v.Version, Stages: v.Stages, CreatedAt: v.CreatedAt, KeyID: v.KeyID,
				KeyVersion: v.KeyVersion, Fields: v.Fields}, nil
		}))
	m.HandleFunc("GET /v1/secrets", handle(s, route{action: "secret:List"},
		func(r *http.Request, _ *empty) string { return "secret/" + r.URL.Query().Get("prefix") },
		func(ctx context.Context, r *http.Request, p auth.Principal, _ *empty) (client.SecretList, error) {
			q := r.URL.Query()
			limit := 0
			if l := q.Get("limit"); l != "" {
				n, err := strconv.Atoi(l)
				if err != nil {
					return client.SecretList{}, badRequest("limit %q: want a number from 1 to %d", l, secrets.MaxListLimit)
				}
				limit = n
			}
			page, err := sec.List(ctx, q.Get("prefix"), q.Get("after"), limit)
			if err != nil {
				return client.SecretList{}, err
			}
			out := client.SecretList{Secrets: make([]client.SecretListEntry, 0, len(page.Secrets)), Next: page.Next}
			for _, e := range page.Secrets {
				// The prefix check is a gate, not the grant: a name under
				// the prefix may lie outside the caller's globs (an allow
				// on secret/a/app also matches the prefix of
				// a/app-admin/x) or under a deny. A page may therefore be
				// shorter than limit; next still pages on.
				if s.authorizeItem(ctx, r, &p, "secret:List", "secret/"+e.Name, nil) != nil {
					continue
				}
				out.Secrets = append(out.Secrets, client.SecretListEntry{Name: e.Name, CurrentVersion: e.CurrentVersion, UpdatedAt: e.UpdatedAt,
					DeletedAt: timeOrNil(e.DeletedAt)})
			}
			return out, nil
		}))
	m.HandleFunc("GET /v1/secrets/metadata/{name...}", handle(s, route{action: "secret:List"}, secretResource[empty],
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.SecretMetadata, error) {
			return secretMetadataOf(sec.Describe(ctx, r.PathValue("name")))
		}))
	m.HandleFunc("PATCH /v1/secrets/metadata/{name...}", handle(s, route{action: "secret:Write"}, secretResource[client.SecretMetadataUpdate],
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *client.SecretMetadataUpdate) (client.SecretMetadata, error) {
			return secretMetadataOf(sec.UpdateMetadata(ctx, r.PathValue("name"),
				secrets.MetadataUpdate{MaxVersions: req.MaxVersions, Set: req.Set, Unset: req.Unset}))
		}))
	m.HandleFunc("POST /v1/secrets/delete/{name...}", handle(s, route{action: "secret:Delete"}, secretResource[client.SecretDeleteRequest],
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *client.SecretDeleteRequest) (client.SecretMetadata, error) {
			var window time.Duration
			if req.Window != "" {
				d, err := keys.ParsePeriod(req.Window)
				if err != nil {
					return client.SecretMetadata{}, badRequest("window %q: want a duration from 1d to 30d, like 7d", req.Window)
				}
				window = d
			}
			return secretMetadataOf(sec.Delete(ctx, r.PathValue("name"), window))
		}))
	m.HandleFunc("POST /v1/secrets/undelete/{name...}", handle(s, route{action: "secret:Delete"}, secretResource[empty],
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.SecretMetadata, error) {
			return secretMetadataOf(sec.Undelete(ctx, r.PathValue("name")))
		}))
	m.HandleFunc("POST /v1/secrets/destroy/{name...}", handle(s, route{action: "secret:Delete"}, secretResource[client.SecretDestroyRequest],
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *client.SecretDestroyRequest) (client.SecretMetadata, error) {
			if rec := recordOf(ctx); rec != nil {
				vs := make([]string, 0, len(req.Versions))
				for _, v := range req.Versions {
					vs = append(vs, strconv.FormatUint(uint64(v), 10))
				}
				rec.Detail = boundString("destroy secret_versions="+strings.Join(vs, ","), maxMessage)
			}
			return secretMetadataOf(sec.Destroy(ctx, r.PathValue("name"), req.Versions))
		}))
	s.secretRotationRoutes()
}

// secretRotationRoutes serve rotation: configuring, disabling and running
// it all need secret:Rotate (the webhook URL is chosen by whoever holds
// it; see docs/secrets.md, "Rotation"). Records name the secret and the
// versions, never a value or the webhook URL.
func (s *Server) secretRotationRoutes() {
	sec := s.sys.Secrets
	m := s.mux
	// The background job's rotations go to the same trail
	// (secrets_rotation_job.go).
	if sec != nil {
		sec.SetRotationRecorder(s.recordScheduledRotation)
	}
	m.HandleFunc("PUT /v1/secrets/rotation/{name...}", handle(s, route{action: "secret:Rotate"}, secretResource[client.SecretRotationRequest],
		func(ctx context.Context, r *http.Request, _ auth.Principal, req *client.SecretRotationRequest) (client.SecretMetadata, error) {
			every, err := secrets.ParseEvery(req.Every)
			if err != nil {
				return client.SecretMetadata{}, err
			}
			if rec := recordOf(ctx); rec != nil {
				rec.Detail = "rotation every=" + keys.FormatPeriod(every)
			}
			md, err := secretMetadataOf(sec.SetRotation(ctx, r.PathValue("name"), secrets.RotationConfig{Every: every, With: req.With, RollSigningKey: req.RollSigningKey}))
			// Who holds the webhook's signing key (whoever got it in this
			// answer) is in the trail; the key itself never is.
			if rec := recordOf(ctx); rec != nil && err == nil && md.Rotation != nil && md.Rotation.SigningKey != "" {
				rec.Detail += " signing_key=made"
			}
			return md, err
		}))
	m.HandleFunc("DELETE /v1/secrets/rotation/{name...}", handle(s, route{action: "secret:Rotate"}, secretResource[empty],
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.SecretMetadata, error) {
			return secretMetadataOf(sec.DisableRotation(ctx, r.PathValue("name")))
		}))
	m.HandleFunc("POST /v1/secrets/rotate/{name...}", handle(s, route{action: "secret:Rotate"}, secretResource[empty],
		func(ctx context.Context, r *http.Request, _ auth.Principal, _ *empty) (client.SecretRotateResult, error) {
			res, err := sec.Rotate(ctx, r.PathValue("name"))
			if rec := recordOf(ctx); rec != nil && res.PendingVersion != 0 {
				if res.CurrentVersion != 0 {
					rec.Detail = "secret_version=" + strconv.FormatUint(uint64(res.CurrentVersion), 10) +
						" previous_version=" + strconv.FormatUint(uint64(res.PreviousVersion), 10)
				} else {
					// Failed: current is unchanged; the pending version stays.
					rec.Detail = "pending_version=" + strconv.FormatUint(uint64(res.PendingVersion), 10) +
						" secret_version=" + strconv.FormatUint(uint64(res.PreviousVersion), 10)
				}
			}
			if err != nil {
				return client.SecretRotateResult{}, err
			}
			return client.SecretRotateResult{Name: res.Name, CurrentVersion: res.CurrentVersion, PreviousVersion: res.PreviousVersion, Resumed: res.Resumed}, nil
		}))
}

// authorizeSecretKey is the second decision of a secret read (REST and
// Vault KV): a version under a key its writer named is read through that
// key, so the reader needs kms:Decrypt on it too (as AWS Secrets Manager
// asks of customer keys), and the key's policy governs reads, not only
// writes. The default key is the service's own. A refusal wipes the
// fields.
func (s *Server) authorizeSecretKey(ctx context.Context, r *http.Request, p *auth.Principal, v *secrets.Value) error {
	if !v.CustomerKey {
		return nil
	}
	ec := map[string]string{"coffer-secret": v.Name}
	if err := s.authorizeItem(ctx, r, p, "kms:Decrypt", v.KeyID, ec); err != nil {
		clear(v.Fields)
		return err
	}
	return nil
}

// errorDetail adds an error's machine-readable detail to its answer: the
// current version of a failed secret check-and-set.
func errorDetail(err error, e *client.Error) {
	var ce *secrets.ConflictError
	if errors.As(err, &ce) {
		v := ce.Current
		e.CurrentVersion = &v
	}
}

func requested(version uint32, stage string) string {
	if version != 0 {
		return "secret_version=" + strconv.FormatUint(uint64(version), 10)
	}
	return "stage=" + stage
}

// recordSecretVersion puts the version acted on, and the Coffer key that
// wraps its data key, in the request's audit record.
func recordSecretVersion(ctx context.Context, v uint32, keyID string, keyVersion uint32) {
	if rec := recordOf(ctx); rec != nil {
		rec.Detail = "secret_version=" + strconv.FormatUint(uint64(v), 10)
		rec.KeyID, rec.Version = keyID, keyVersion
	}
}

// queryUint32 reads an optional positive integer query parameter.
func queryUint32(r *http.Request, name string) (uint32, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		return 0, badRequest("%s %q: want a positive whole number", name, boundString(s, 32))
	}
	return uint32(n), nil
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func secretVersionOf(v secrets.VersionInfo) client.SecretVersion {
	return client.SecretVersion{Version: v.Version, Stages: v.Stages, CreatedAt: v.CreatedAt, KeyID: v.KeyID, KeyVersion: v.KeyVersion,
		Destroyed: v.Destroyed, DestroyedAt: timeOrNil(v.DestroyedAt)}
}

func secretMetadataOf(m secrets.Metadata, err error) (client.SecretMetadata, error) {
	if err != nil {
		return client.SecretMetadata{}, err
	}
	out := client.SecretMetadata{Name: m.Name, Key: m.Key, MaxVersions: m.MaxVersions, Custom: m.Custom, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt,
		CurrentVersion: m.CurrentVersion, PreviousVersion: m.PreviousVersion, PendingVersion: m.PendingVersion, LatestVersion: m.LatestVersion,
		DeletedAt: timeOrNil(m.DeletedAt), PurgeAt: timeOrNil(m.PurgeAt), Versions: make([]client.SecretVersion, 0, len(m.Versions))}
	for _, v := range m.Versions {
		out.Versions = append(out.Versions, secretVersionOf(v))
	}
	if r := m.Rotation; r != nil {
		out.Rotation = &client.SecretRotation{Every: keys.FormatPeriod(r.Every), With: r.With, NextAt: r.NextAt, State: r.State,
			Attempts: r.Attempts, LastError: r.LastError, LastRotated: timeOrNil(r.LastRotated), Unsigned: r.Unsigned}
		if len(r.NewSigningKey) != 0 {
			out.Rotation.SigningKey = base64.StdEncoding.EncodeToString(r.NewSigningKey)
			// The answer's string is the one copy that must leave; the
			// bytes are not needed past here.
			clear(r.NewSigningKey)
		}
	}
	return out, nil
}
