package cli

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

func TestParseRole(t *testing.T) {
	full := client.Role{
		Name: "deploy", Description: "CI deploys", Policies: []string{"deploy"}, TTL: "15m", MaxTTL: "1h",
		TrustPrincipals: []string{"access-key:cfak_*"},
		Kubernetes:      []client.KubernetesTrust{{Cluster: "prod", Namespace: "no", ServiceAccount: "on", Audience: "coffer"}},
		Certificates:    []client.CertificateTrust{{CommonName: "ci-*"}},
		BoundCIDRs:      []string{"10.0.0.0/8"},
	}
	for _, tc := range []struct {
		name, doc string
		want      client.Role
		err       string
	}{
		{name: "yaml", doc: `name: deploy
description: CI deploys
policies: [deploy]
ttl: 15m
max_ttl: 1h
trust_principals: ["access-key:cfak_*"]
kubernetes:
  - {cluster: prod, namespace: no, service_account: on, audience: coffer}   # YAML 1.2: strings
certificates:
  - common_name: ci-*
bound_cidrs: [10.0.0.0/8]
`, want: full},
		{name: "json", doc: `{"name":"deploy","description":"CI deploys","policies":["deploy"],"ttl":"15m","max_ttl":"1h",
"trust_principals":["access-key:cfak_*"],"kubernetes":[{"cluster":"prod","namespace":"no","service_account":"on","audience":"coffer"}],
"certificates":[{"common_name":"ci-*"}],"bound_cidrs":["10.0.0.0/8"],"created_at":"2026-01-02T03:04:05Z"}`,
			want: func() client.Role { r := full; r.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); return r }()},
		{name: "unknown field", doc: "policies: [a]\npolices: [b]\n", err: `unknown field "polices" (fields: name,`},
		{name: "nested unknown field", doc: "kubernetes: [{cluster: c, namespace: n, serviceaccount: s}]\n", err: `unknown field "serviceaccount"`},
		{name: "string for list", doc: "policies: a\n", err: "policies: want a list, got a string"},
		{name: "list for string", doc: "kubernetes: [{cluster: [c]}]\n", err: "kubernetes.cluster: want a string, got a list"},
		{name: "number for string", doc: "ttl: 15\n", err: "ttl: want a string, got a number"},
		{name: "duplicate key", doc: "ttl: 1h\nttl: 2h\n", err: `"ttl" already defined`},
		{name: "not a mapping", doc: "- a\n", err: "a role is a mapping of fields"},
		{name: "two documents", doc: "ttl: 1h\n---\nttl: 2h\n", err: "more than one YAML document"},
		{name: "syntax", doc: "ttl: 15m\n  bad: indent\n", err: "line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRole([]byte(tc.doc))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestK8sTrustFlag(t *testing.T) {
	var f k8sTrustFlag
	for _, v := range []string{"cluster=prod,namespace=ci,service-account=deployer", "cluster=*,namespace=a-*,service_account=web,audience=vault"} {
		if err := f.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	want := []client.KubernetesTrust{
		{Cluster: "prod", Namespace: "ci", ServiceAccount: "deployer"},
		{Cluster: "*", Namespace: "a-*", ServiceAccount: "web", Audience: "vault"},
	}
	if !reflect.DeepEqual(f.list, want) {
		t.Errorf("got %+v, want %+v", f.list, want)
	}
	for v, msg := range map[string]string{
		"cluster=prod":                                      "cluster, namespace and service-account are required",
		"cluster=prod,namespace=ci,sa=x":                    `unknown field "sa"`,
		"cluster=prod,namespace,service-account=x":          `"namespace": want NAME=VALUE`,
		"cluster=a,cluster=b,namespace=n,service-account=s": "cluster given twice",
		"cluster=,namespace=n,service-account=s":            `"cluster=": want NAME=VALUE (use * for any)`,
	} {
		if err := f.Set(v); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("Set(%q) = %v, want an error containing %q", v, err, msg)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour: "1h", 12 * time.Hour: "12h", 90 * time.Minute: "1h30m", 30 * time.Minute: "30m", 10 * time.Minute: "10m", 45 * time.Second: "45s",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
