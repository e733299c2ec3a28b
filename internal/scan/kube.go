package scan

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"path"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxStructuredSize bounds the files read as YAML/JSON documents; larger
// ones get the line rules only.
const maxStructuredSize = 4 << 20

// workloadKinds hold pod templates whose containers' env values are checked.
var workloadKinds = map[string]bool{
	"Pod": true, "PodTemplate": true, "Deployment": true, "StatefulSet": true, "DaemonSet": true,
	"ReplicaSet": true, "ReplicationController": true, "Job": true, "CronJob": true,
}

var (
	helmValuesRe = regexp.MustCompile(`^values[\w.-]*\.ya?ml$`)
	// A line that is only a template action ({{- if ... }}) is dropped;
	// an inline action becomes a plain placeholder scalar.
	helmLineRe   = regexp.MustCompile(`(?m)^[ \t]*\{\{[^\n]*\}\}[ \t]*$`)
	helmInlineRe = regexp.MustCompile(`\{\{[^\n]*?\}\}`)
)

// helmPlaceholder replaces template actions; it is a placeholder by
// isPlaceholder's rules, so templated values are never findings.
const helmPlaceholder = "HELM{{}}"

func looksStructured(p string, data []byte) bool {
	if len(data) > maxStructuredSize {
		return false
	}
	if p == "-" {
		return bytes.Contains(data, []byte("apiVersion:")) || bytes.Contains(data, []byte("auths"))
	}
	switch strings.ToLower(path.Ext(p)) {
	case ".yaml", ".yml", ".json":
		return true
	case "", ".conf", ".config", ".kubeconfig", ".cfg":
		// ~/.kube/config, admin.conf, prod.kubeconfig: by content.
		return looksKubeconfig(data)
	}
	return strings.Contains(strings.ToLower(path.Base(p)), "kubeconfig") && looksKubeconfig(data)
}

// looksKubeconfig reports whether data may be a kubeconfig file.
func looksKubeconfig(data []byte) bool {
	return bytes.Contains(data, []byte("kind: Config")) && bytes.Contains(data, []byte("users:"))
}

// scanYAML reads data as YAML (JSON is YAML) documents and applies the
// Kubernetes-aware checks. Unparseable documents end the pass quietly:
// the line rules have already run.
func (s *Scanner) scanYAML(p string, data []byte, res *scanResult) {
	defer func() {
		if recover() != nil {
			res.yamlErrors++
		}
	}()
	if bytes.Contains(data, []byte("{{")) {
		data = helmLineRe.ReplaceAllFunc(data, func([]byte) []byte { return nil })
		data = helmInlineRe.ReplaceAll(data, []byte(helmPlaceholder))
	}
	k := &kubeCheck{s: s, res: res, values: helmValuesRe.MatchString(path.Base(p))}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			res.yamlErrors++
			break
		}
		if len(doc.Content) == 1 {
			k.document(doc.Content[0])
		}
	}
	if len(k.safe) > 0 {
		res.findings = dropInRanges(res.findings, k.safe)
	}
	if len(k.sealed) > 0 {
		res.findings = dropSealed(res.findings, k.sealed)
	}
}

// sealedValue is a sealed-secrets ciphertext and the lines it spans.
type sealedValue struct {
	lines  lineRange
	cipher string
}

// dropSealed removes the findings that are (part of) a sealed-secrets
// ciphertext: the generic rules see a long random value under a
// password-like key, but it is encrypted to the controller's key.
func dropSealed(fs []Finding, vs []sealedValue) []Finding {
	out := fs[:0]
	for _, f := range fs {
		in := false
		for _, v := range vs {
			if f.Line >= v.lines.from && f.Line <= v.lines.to && strings.Contains(v.cipher, strings.Join(strings.Fields(f.Secret), "")) {
				in = true
				break
			}
		}
		if !in {
			out = append(out, f)
		}
	}
	return out
}

// findSealed records the sealed-secrets ciphertexts anywhere in a
// document (a SealedSecret's encryptedData, a Helm values file that
// carries one, a template). Under an encryptedData key the values are
// ciphertexts by their place: there any long base64 value that starts
// like one (Ag...) counts, whatever its length, since hand-written and
// truncated examples rarely carry the exact length of a wrapped session
// key; elsewhere the length prefix must add up (sealedSecretsCipher).
func (k *kubeCheck) findSealed(n *yaml.Node, depth int, encrypted bool) {
	if n == nil || depth > 64 {
		return
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if strings.HasPrefix(n.Value, "Ag") && (encrypted && sealedShaped(n.Value) || len(n.Value) >= 300 && sealedSecretsCipher(n.Value)) {
			v := strings.Join(strings.Fields(n.Value), "")
			k.sealed = append(k.sealed, sealedValue{lineRange{n.Line, n.Line + strings.Count(n.Value, "\n") + 1}, v})
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k.findSealed(n.Content[i+1], depth+1, encrypted || n.Content[i].Value == "encryptedData")
		}
	default:
		for _, c := range n.Content {
			k.findSealed(c, depth+1, false)
		}
	}
}

type lineRange struct{ from, to int }

func dropInRanges(fs []Finding, rs []lineRange) []Finding {
	out := fs[:0]
	for _, f := range fs {
		in := false
		for _, r := range rs {
			if f.Line >= r.from && f.Line <= r.to {
				in = true
				break
			}
		}
		if !in {
			out = append(out, f)
		}
	}
	return out
}

type kubeCheck struct {
	s      *Scanner
	res    *scanResult
	values bool // a Helm values file
	safe   []lineRange
	sealed []sealedValue
}

// get returns the value of key in mapping node m, or nil.
func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func lastLine(n *yaml.Node) int {
	l := n.Line
	for _, c := range n.Content {
		l = max(l, lastLine(c))
	}
	return l
}

func (k *kubeCheck) document(doc *yaml.Node) {
	if doc.Kind != yaml.MappingNode {
		return
	}
	k.findSealed(doc, 0, false)
	// A sealed file's metadata block holds wrapped keys and MACs, not secrets.
	if meta := get(doc, "coffer"); meta != nil && get(meta, "mac") != nil && get(meta, "version") != nil {
		k.safe = append(k.safe, lineRange{meta.Line - 1, lastLine(meta)})
	}
	kind := scalar(get(doc, "kind"))
	meta := get(doc, "metadata")
	name := scalar(get(meta, "name"))
	if ns := scalar(get(meta, "namespace")); ns != "" {
		name = ns + "/" + name
	}
	switch {
	case kind == "Secret":
		k.secret(doc, name)
	case kind == "Config" || (kind == "" && get(doc, "users") != nil && get(doc, "clusters") != nil):
		k.kubeconfig(doc, "kubeconfig")
	case kind == "ConfigMap":
		k.configMap(doc, name)
	case strings.HasSuffix(kind, "List"):
		if items := get(doc, "items"); items != nil && items.Kind == yaml.SequenceNode {
			for _, it := range items.Content {
				k.document(it)
			}
		}
	case workloadKinds[kind]:
		k.env(doc, kind+" "+name, 0)
	case kind == "" && k.values:
		k.helmValues(doc, "", 0)
	}
}

func (k *kubeCheck) add(rule string, n *yaml.Node, secret, where string) {
	r := k.s.byID[rule]
	if r == nil {
		return // disabled by the config
	}
	for _, re := range k.s.allowRe {
		if re.MatchString(secret) {
			return
		}
	}
	if strings.Contains(n.LineComment, "coffer:allow") || strings.Contains(n.HeadComment, "coffer:allow") {
		k.res.suppressed++
		return
	}
	// A literal block holding a known format (a PEM key over the lines
	// below its key) is reported by that format's line rule on its own
	// line: one finding per secret.
	if strings.Contains(secret, "\n") {
		var inner scanResult
		if k.s.scanLines("", []byte(secret), &inner); len(inner.findings) > 0 {
			return
		}
	}
	k.res.findings = append(k.res.findings, Finding{RuleID: rule, Line: n.Line, Column: n.Column, Secret: secret, Where: where, priority: r.priority})
}

// plausible reports whether a literal value could be a real secret.
func (k *kubeCheck) plausible(v string, minLen int) bool {
	return len(v) >= minLen && !isPlaceholder(v) && !strings.Contains(v, helmPlaceholder) && !hasStopword(v, k.s.stopwords)
}

func (k *kubeCheck) secret(doc *yaml.Node, name string) {
	typ := scalar(get(doc, "type"))
	if data := get(doc, "data"); data != nil && data.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(data.Content); i += 2 {
			key, val := data.Content[i].Value, data.Content[i+1]
			v := strings.Join(strings.Fields(scalar(val)), "")
			if v == "" || isPlaceholder(v) || strings.Contains(v, helmPlaceholder) {
				continue
			}
			where := "Secret " + name + " data." + key
			decoded, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				decoded = []byte(v) // not base64: the literal is the secret
			}
			if publicSecretField(typ, key, string(decoded)) || secretMetadataKeys[key] {
				continue
			}
			if looksKubeconfig(decoded) {
				// A kubeconfig stored in a Secret (Cluster API, Argo CD).
				if fs := k.nestedKubeconfig(decoded); len(fs) > 0 {
					for _, f := range fs {
						f.Line, f.Column, f.Where = val.Line, val.Column, where+" (base64-decoded) "+f.Where
						k.res.findings = append(k.res.findings, f)
					}
					continue
				}
			}
			// Rescan the decoded value: a known format names itself.
			var inner scanResult
			k.s.scanLines("", decoded, &inner)
			if len(inner.findings) > 0 {
				for _, f := range inner.findings {
					f.Line, f.Column, f.Where = val.Line, val.Column, where+" (base64-decoded)"
					k.res.findings = append(k.res.findings, f)
				}
				continue
			}
			if k.plausible(string(decoded), 4) {
				k.add("k8s-secret-data", val, string(decoded), where)
			}
		}
	}
	if sd := get(doc, "stringData"); sd != nil && sd.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(sd.Content); i += 2 {
			key, val := sd.Content[i].Value, sd.Content[i+1]
			v := scalar(val)
			if looksKubeconfig([]byte(v)) {
				// A kubeconfig pasted as a literal block: its credentials on
				// their own lines.
				if fs := k.nestedKubeconfig([]byte(v)); len(fs) > 0 {
					for _, f := range fs {
						f.Line, f.Column = blockLine(val, f.Line), 0
						f.Where = "Secret " + name + " stringData." + key + " " + f.Where
						k.res.findings = append(k.res.findings, f)
					}
					continue
				}
			}
			if k.plausible(v, 4) && !publicSecretField(typ, key, v) && !secretMetadataKeys[key] {
				k.add("k8s-secret-stringdata", val, v, "Secret "+name+" stringData."+key)
			}
		}
	}
}

func (k *kubeCheck) configMap(doc *yaml.Node, name string) {
	data := get(doc, "data")
	if data == nil || data.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(data.Content); i += 2 {
		key, val := data.Content[i].Value, data.Content[i+1]
		v := scalar(val)
		if secretKeyName(key) && k.plausible(v, 8) && secretShaped(v) && entropy(v) >= 3.0 {
			k.add("k8s-configmap-secret", val, v, "ConfigMap "+name+" data."+key)
		}
	}
}

// env walks a workload for containers' env lists with literal secrets.
func (k *kubeCheck) env(n *yaml.Node, where string, depth int) {
	if depth > 64 || n == nil {
		return
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "env" && n.Content[i+1].Kind == yaml.SequenceNode {
				for _, e := range n.Content[i+1].Content {
					name, val := scalar(get(e, "name")), get(e, "value")
					if val != nil && secretKeyName(name) && k.plausible(scalar(val), 6) {
						k.add("k8s-env-literal-secret", val, scalar(val), where+" env "+name)
					}
				}
				continue
			}
			k.env(n.Content[i+1], where, depth+1)
		}
		return
	}
	for _, c := range n.Content {
		k.env(c, where, depth+1)
	}
}

// helmValues walks a values file for secret-named keys with literal values.
func (k *kubeCheck) helmValues(n *yaml.Node, prefix string, depth int) {
	if depth > 64 || n == nil {
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i].Value, n.Content[i+1]
			p := strings.TrimPrefix(prefix+"."+key, ".")
			if depth == 0 && key == "coffer" {
				continue
			}
			if val.Kind == yaml.ScalarNode {
				v := val.Value
				if val.Tag == "!!str" && secretKeyName(key) && k.plausible(v, 8) && secretShaped(v) {
					k.add("helm-values-secret", val, v, "values "+p)
				}
				continue
			}
			k.helmValues(val, p, depth+1)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			k.helmValues(c, prefix, depth+1)
		}
	}
}

// secretMetadataKeys are the keys of Secrets (Argo CD repositories and
// clusters, database bindings) that describe a credential rather than hold
// it: a URL's password is found by the line rules.
var secretMetadataKeys = map[string]bool{
	"url": true, "type": true, "name": true, "project": true, "namespace": true, "server": true,
	"host": true, "hostname": true, "port": true, "username": true, "user": true, "database": true, "dbname": true,
}

// publicSecretField reports whether a Secret's value is public by design:
// the certificates of a kubernetes.io/tls Secret, the CA certificate and
// namespace of a service-account token Secret, everything but the
// token-secret of a bootstrap token Secret, or any value that holds
// only certificates or public keys. A value with a private key in it is
// never public, whatever its key is called.
func publicSecretField(typ, key, value string) bool {
	if strings.Contains(value, "PRIVATE KEY") {
		return false
	}
	switch typ {
	case "kubernetes.io/tls":
		if key == "tls.crt" || key == "ca.crt" {
			return true
		}
	case "kubernetes.io/service-account-token":
		if key == "ca.crt" || key == "namespace" {
			return true
		}
	case "bootstrap.kubernetes.io/token":
		// token-id is the public half of id.secret; the usage flags,
		// expiration, description and groups are settings.
		return key != "token-secret"
	}
	return publicPEM(value)
}

// publicPEM reports whether v consists of PEM blocks that are public:
// certificates, certificate requests, CRLs and public keys.
func publicPEM(v string) bool {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "-----BEGIN ") {
		return false
	}
	for rest := v; ; {
		i := strings.Index(rest, "-----BEGIN ")
		if i < 0 {
			return true
		}
		rest = rest[i+len("-----BEGIN "):]
		typ, _, ok := strings.Cut(rest, "-----")
		if !ok {
			return false
		}
		switch typ {
		case "CERTIFICATE", "TRUSTED CERTIFICATE", "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST", "X509 CRL", "PUBLIC KEY", "RSA PUBLIC KEY":
		default:
			return false
		}
	}
}

// kubeconfig checks the users of a kubeconfig file for credentials:
// client-key-data, token, a basic-auth password and an auth-provider's
// client secret and tokens. Certificates (certificate-authority-data,
// client-certificate-data), exec plugins and tokenFile paths are not
// credentials and are not looked at.
func (k *kubeCheck) kubeconfig(doc *yaml.Node, where string) {
	users := get(doc, "users")
	if users == nil || users.Kind != yaml.SequenceNode {
		return
	}
	for _, u := range users.Content {
		user := get(u, "user")
		if user == nil || user.Kind != yaml.MappingNode {
			continue
		}
		w := where + " user " + scalar(get(u, "name"))
		if v := get(user, "client-key-data"); v != nil {
			if s := strings.Join(strings.Fields(scalar(v)), ""); kubeClientKey(s) {
				k.add("kubeconfig-client-key", v, s, w+" client-key-data")
			}
		}
		if v := get(user, "token"); v != nil {
			if s := scalar(v); len(s) >= 16 && k.plausible(s, 16) && !envRefRe.MatchString(s) && entropy(s) >= 3.0 {
				k.add("kubeconfig-token", v, s, w+" token")
			}
		}
		if v := get(user, "password"); v != nil {
			if s := scalar(v); configValue(s) && k.plausible(s, 6) {
				k.add("kubeconfig-password", v, s, w+" password")
			}
		}
		cfg := get(get(user, "auth-provider"), "config")
		if cfg == nil || cfg.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(cfg.Content); i += 2 {
			key, v := cfg.Content[i].Value, cfg.Content[i+1]
			switch key {
			case "client-secret", "refresh-token", "id-token", "access-token":
				if s := scalar(v); k.plausible(s, 8) && !envRefRe.MatchString(s) && entropy(s) >= 3.0 {
					k.add("kubeconfig-auth-provider-secret", v, s, w+" auth-provider "+key)
				}
			default:
				// cmd-path, token-key ({.credential.access_token}),
				// idp-issuer-url: settings the line rules misread.
				k.safe = append(k.safe, lineRange{v.Line, lastLine(v)})
			}
		}
	}
}

// kubeClientKey accepts client-key-data that holds a private key: base64
// of a PEM private key with a body, or of anything long that is not a
// certificate (a DER key). A certificate pasted into the field, a
// placeholder or a truncated value is not a finding.
func kubeClientKey(s string) bool {
	if len(s) < 64 || isPlaceholder(s) {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return false
	}
	d := string(b)
	if !strings.Contains(d, "-----BEGIN ") {
		return len(b) >= 64 && entropy(d) >= 5.0 // DER
	}
	if !strings.Contains(d, "PRIVATE KEY-----") {
		return false
	}
	n := 0
	for _, l := range strings.Split(d, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "-----BEGIN") {
			_, l, _ = strings.Cut(l[5:], "-----")
		}
		if strings.HasPrefix(l, "-----END") || strings.Contains(l, "...") {
			break
		}
		if strings.Trim(l, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") == "" {
			n += len(l)
		}
	}
	return n >= 64 && !isPlaceholder(d)
}

// blockLine maps line n (1-based) of a scalar's value to a line of the
// file: a literal block's lines follow its indicator line one to one;
// other styles fold lines, so the value's own line is taken.
func blockLine(val *yaml.Node, n int) int {
	if val.Style&yaml.LiteralStyle != 0 {
		return val.Line + n
	}
	return val.Line
}

// nestedKubeconfig checks a kubeconfig found inside another document
// (a Secret's decoded value); the findings' lines are those of data.
func (k *kubeCheck) nestedKubeconfig(data []byte) (fs []Finding) {
	sub := &kubeCheck{s: k.s, res: &scanResult{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if dec.Decode(&doc) != nil {
			break
		}
		if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
			sub.kubeconfig(doc.Content[0], "kubeconfig")
		}
	}
	return sub.res.findings
}
