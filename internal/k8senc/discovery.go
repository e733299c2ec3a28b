package k8senc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PreferredResources lists the resources of each API group's preferred
// version, as `kubectl api-resources` does, with plain GETs of /api/v1,
// /apis and /apis/<group>/<version>. (client-go's discovery package would
// link every built-in API type into the coffer binary, and their
// registration at start-up costs the server tens of MiB of resident memory.)
func PreferredResources(ctx context.Context, hc *http.Client, host string) ([]*metav1.APIResourceList, error) {
	host = strings.TrimRight(host, "/")
	var core metav1.APIResourceList
	if err := getJSON(ctx, hc, host+"/api/v1", &core); err != nil {
		return nil, err
	}
	core.GroupVersion = "v1"
	out := []*metav1.APIResourceList{&core}
	var groups metav1.APIGroupList
	if err := getJSON(ctx, hc, host+"/apis", &groups); err != nil {
		return nil, err
	}
	for _, g := range groups.Groups {
		gv := g.PreferredVersion.GroupVersion
		if gv == "" && len(g.Versions) > 0 {
			gv = g.Versions[0].GroupVersion
		}
		if gv == "" {
			continue
		}
		var l metav1.APIResourceList
		if err := getJSON(ctx, hc, host+"/apis/"+gv, &l); err != nil {
			// An aggregated API that is down should not stop a migration
			// of the resources that are there.
			continue
		}
		l.GroupVersion = gv
		out = append(out, &l)
	}
	return out, nil
}

func getJSON(ctx context.Context, hc *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("discovery: GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 32<<20)).Decode(v); err != nil {
		return fmt.Errorf("discovery: GET %s: %w", url, err)
	}
	return nil
}
