package rbac

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Snapshot is the part of a cluster's state the audit reads. Secrets hold
// only their metadata and type: Load drops every value.
type Snapshot struct {
	Roles               []rbacv1.Role
	ClusterRoles        []rbacv1.ClusterRole
	RoleBindings        []rbacv1.RoleBinding
	ClusterRoleBindings []rbacv1.ClusterRoleBinding
	ServiceAccounts     []corev1.ServiceAccount
	Pods                []corev1.Pod
	Secrets             []corev1.Secret
	// Namespaces are the names of Namespace objects seen.
	Namespaces []string
	// Workloads are pod templates of workload controllers (Deployments,
	// StatefulSets, ...), as pods named KIND/NAME, so the hygiene checks
	// see the service accounts Helm charts mount.
	Workloads []corev1.Pod
}

// Add appends the objects of other to s.
func (s *Snapshot) Add(other *Snapshot) {
	s.Roles = append(s.Roles, other.Roles...)
	s.ClusterRoles = append(s.ClusterRoles, other.ClusterRoles...)
	s.RoleBindings = append(s.RoleBindings, other.RoleBindings...)
	s.ClusterRoleBindings = append(s.ClusterRoleBindings, other.ClusterRoleBindings...)
	s.ServiceAccounts = append(s.ServiceAccounts, other.ServiceAccounts...)
	s.Pods = append(s.Pods, other.Pods...)
	s.Secrets = append(s.Secrets, other.Secrets...)
	s.Namespaces = append(s.Namespaces, other.Namespaces...)
	s.Workloads = append(s.Workloads, other.Workloads...)
}

// typeMeta is the part of every object that names its kind.
type typeMeta struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []json.RawMessage `json:"items"`
}

// workloadKinds are the controllers whose pod template Load reads, with the
// JSON path of the template's pod spec.
var workloadKinds = map[string][]string{
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
}

// Load reads manifests from r: YAML documents separated by ---, or JSON
// objects, each an object or a List (kubectl get -o yaml). Kinds the audit
// does not use are skipped. name is used in errors. YAML documents are
// converted on every CPU: a large export is mostly YAML parsing.
func Load(r io.Reader, name string) (*Snapshot, error) {
	br := bufio.NewReaderSize(r, 64*1024)
	if first, err := firstByte(br); err != nil {
		return &Snapshot{}, nil
	} else if first == '{' || first == '[' {
		return loadJSON(br, name)
	}
	return loadYAML(br, name)
}

// firstByte peeks at the first byte that is not white space.
func firstByte(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if !unicode.IsSpace(rune(b)) {
			return b, br.UnreadByte()
		}
	}
}

// loadJSON reads a stream of JSON objects.
func loadJSON(r io.Reader, name string) (*Snapshot, error) {
	s := &Snapshot{}
	dec := json.NewDecoder(r)
	for doc := 1; ; doc++ {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, doc, err)
		}
		if err := s.addObject(raw); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, doc, err)
		}
	}
}

// loadYAML splits YAML documents and converts them to JSON in parallel,
// then adds them in order.
func loadYAML(br *bufio.Reader, name string) (*Snapshot, error) {
	yr := k8syaml.NewYAMLReader(br)
	var docs [][]byte
	for {
		d, err := yr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, len(docs)+1, err)
		}
		docs = append(docs, d)
	}
	jsons := make([][]byte, len(docs))
	errs := make([]error, len(docs))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(docs); i += workers {
				jsons[i], errs[i] = k8syaml.ToJSON(docs[i])
			}
		}()
	}
	wg.Wait()
	s := &Snapshot{}
	for i, raw := range jsons {
		if errs[i] != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i+1, errs[i])
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
			continue
		}
		if err := s.addObject(raw); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i+1, err)
		}
	}
	return s, nil
}

// addObject decodes one object (or List) into s.
func (s *Snapshot) addObject(raw json.RawMessage) error {
	var tm typeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return err
	}
	group := tm.APIVersion
	if i := strings.LastIndex(group, "/"); i >= 0 {
		group = group[:i]
	} else {
		group = ""
	}
	if strings.HasSuffix(tm.Kind, "List") {
		for i, item := range tm.Items {
			if err := s.addObject(item); err != nil {
				return fmt.Errorf("%s item %d: %w", tm.Kind, i, err)
			}
		}
		return nil
	}
	var err error
	switch {
	case group == rbacv1.GroupName && tm.Kind == "Role":
		var o rbacv1.Role
		err = json.Unmarshal(raw, &o)
		s.Roles = append(s.Roles, o)
	case group == rbacv1.GroupName && tm.Kind == "ClusterRole":
		var o rbacv1.ClusterRole
		err = json.Unmarshal(raw, &o)
		s.ClusterRoles = append(s.ClusterRoles, o)
	case group == rbacv1.GroupName && tm.Kind == "RoleBinding":
		var o rbacv1.RoleBinding
		err = json.Unmarshal(raw, &o)
		s.RoleBindings = append(s.RoleBindings, o)
	case group == rbacv1.GroupName && tm.Kind == "ClusterRoleBinding":
		var o rbacv1.ClusterRoleBinding
		err = json.Unmarshal(raw, &o)
		s.ClusterRoleBindings = append(s.ClusterRoleBindings, o)
	case group == "" && tm.Kind == "ServiceAccount":
		var o corev1.ServiceAccount
		err = json.Unmarshal(raw, &o)
		o.Secrets = nil
		s.ServiceAccounts = append(s.ServiceAccounts, o)
	case group == "" && tm.Kind == "Pod":
		var o corev1.Pod
		err = json.Unmarshal(raw, &o)
		o.Status = corev1.PodStatus{}
		s.Pods = append(s.Pods, o)
	case group == "" && tm.Kind == "Secret":
		var o corev1.Secret
		err = json.Unmarshal(raw, &o)
		o.Data, o.StringData = nil, nil // never keep a value
		delete(o.Annotations, "kubectl.kubernetes.io/last-applied-configuration")
		s.Secrets = append(s.Secrets, o)
	case group == "" && tm.Kind == "Namespace":
		var o corev1.Namespace
		err = json.Unmarshal(raw, &o)
		s.Namespaces = append(s.Namespaces, o.Name)
	case workloadKinds[tm.Kind] != nil:
		err = s.addWorkload(tm.Kind, raw)
	}
	return err
}

// addWorkload records the pod template of a workload controller.
func (s *Snapshot) addWorkload(kind string, raw json.RawMessage) error {
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return err
	}
	meta, _ := obj["metadata"].(map[string]any)
	var cur any = obj
	for _, k := range workloadKinds[kind] {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return err
	}
	var tmpl corev1.PodTemplateSpec
	if err := json.Unmarshal(b, &tmpl); err != nil {
		return fmt.Errorf("%s pod template: %w", kind, err)
	}
	p := corev1.Pod{Spec: tmpl.Spec}
	p.Name = kind + "/" + fmt.Sprint(meta["name"])
	if ns, ok := meta["namespace"].(string); ok {
		p.Namespace = ns
	}
	s.Workloads = append(s.Workloads, p)
	return nil
}

// manifestExts are the file name endings LoadFiles reads in a directory.
var manifestExts = []string{".yaml", ".yml", ".json"}

// LoadFiles loads every path: "-" is stdin, a directory is walked for
// .yaml, .yml and .json files (in lexical order), anything else is read as
// a manifest file whatever its name.
func LoadFiles(paths []string, stdin io.Reader) (*Snapshot, error) {
	s := &Snapshot{}
	load := func(r io.Reader, name string) error {
		one, err := Load(r, name)
		if err != nil {
			return err
		}
		s.Add(one)
		return nil
	}
	for _, p := range paths {
		if p == "-" {
			if err := load(stdin, "stdin"); err != nil {
				return nil, err
			}
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			if err := loadFile(p, load); err != nil {
				return nil, err
			}
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !slices.Contains(manifestExts, strings.ToLower(filepath.Ext(path))) {
				return nil
			}
			return loadFile(path, load)
		})
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

func loadFile(path string, load func(io.Reader, string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return load(f, path)
}
