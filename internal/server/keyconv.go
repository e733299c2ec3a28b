package server

import (
	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/keys"
)

// The REST wire types of keys and aliases (client) and the key service's
// own types (keys) meet here, and only here. Each answer function takes a
// service call's results as they are (keyAnswer(k.Describe(ctx, ref))), so
// a handler stays one line; on an error the zero answer is returned, as
// handle writes only the error then.

// createKeyRequest is the key service's request for a POST /v1/keys body.
func createKeyRequest(req *client.CreateKeyRequest) keys.CreateRequest {
	return keys.CreateRequest{Alias: req.Alias, Description: req.Description, RotationPeriod: req.RotationPeriod, Tags: req.Tags}
}

// updateKeyRequest is the key service's request for a PATCH
// /v1/keys/{key} body.
func updateKeyRequest(req *client.UpdateKeyRequest) keys.UpdateRequest {
	return keys.UpdateRequest{Description: req.Description, RotationPeriod: req.RotationPeriod, Tags: req.Tags}
}

// wireKey is the REST form of a key. The rotation period travels as
// keys.FormatPeriod writes it ("90d", "12h"; empty: none), and aliases
// and versions are never null.
func wireKey(k keys.Key) client.Key {
	out := client.Key{
		ID:             k.ID,
		Aliases:        k.Aliases,
		Description:    k.Description,
		State:          client.KeyState(k.State),
		CreatedAt:      k.CreatedAt,
		PrimaryVersion: k.PrimaryVersion,
		Versions:       make([]client.KeyVersion, len(k.Versions)),
		RotationPeriod: keys.FormatPeriod(k.RotationPeriod),
		LastRotatedAt:  k.LastRotatedAt,
		NextRotationAt: k.NextRotationAt,
		DeletionDate:   k.DeletionDate,
		Tags:           k.Tags,
	}
	if out.Aliases == nil {
		out.Aliases = []string{}
	}
	for i, v := range k.Versions {
		out.Versions[i] = client.KeyVersion{Version: v.Version, CreatedAt: v.CreatedAt}
	}
	return out
}

// keyAnswer is the REST answer of a key service call that returns a key.
func keyAnswer(k keys.Key, err error) (client.Key, error) {
	if err != nil {
		return client.Key{}, err
	}
	return wireKey(k), nil
}

// wireKeyList is the answer of GET /v1/keys.
func wireKeyList(ks []keys.Key) client.KeyList {
	out := client.KeyList{Keys: make([]client.Key, len(ks))}
	for i, k := range ks {
		out.Keys[i] = wireKey(k)
	}
	return out
}

// aliasAnswer is the REST answer of a key service call that returns an
// alias.
func aliasAnswer(a keys.Alias, err error) (client.Alias, error) {
	if err != nil {
		return client.Alias{}, err
	}
	return client.Alias{Name: a.Name, KeyID: a.KeyID}, nil
}

// aliasListAnswer is the answer of GET /v1/aliases.
func aliasListAnswer(as []keys.Alias, err error) (client.AliasList, error) {
	if err != nil {
		return client.AliasList{}, err
	}
	out := client.AliasList{Aliases: make([]client.Alias, len(as))}
	for i, a := range as {
		out.Aliases[i] = client.Alias{Name: a.Name, KeyID: a.KeyID}
	}
	return out, nil
}
