package k8senc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// Resource is one resource to migrate.
type Resource struct {
	// Name is how the user and the status report name it: "secrets",
	// "configmaps", "widgets.example.com".
	Name       string
	GVR        schema.GroupVersionResource
	Namespaced bool
}

// ResolveResources maps names such as "secrets" or "widgets.example.com"
// to resources the apiserver serves, given its preferred resource lists
// (PreferredResources).
func ResolveResources(lists []*metav1.APIResourceList, names []string) ([]Resource, error) {
	var out []Resource
	for _, name := range names {
		res, grp, _ := strings.Cut(name, ".")
		found := false
		for _, l := range lists {
			gv, err := schema.ParseGroupVersion(l.GroupVersion)
			if err != nil || gv.Group != grp {
				continue
			}
			for _, r := range l.APIResources {
				if r.Name != res || !containsVerb(r.Verbs, "list") || !containsVerb(r.Verbs, "update") {
					continue
				}
				out = append(out, Resource{Name: name, GVR: gv.WithResource(r.Name), Namespaced: r.Namespaced})
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("resource %q: the apiserver serves no such resource that can be listed and updated (name it as in kubectl api-resources: secrets, configmaps, widgets.example.com)", name)
		}
	}
	return out, nil
}

func containsVerb(verbs metav1.Verbs, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}

// Ref names one object in a checkpoint.
type Ref struct{ Resource, Namespace, Name string }

func (r Ref) line() string { return r.Resource + "\t" + r.Namespace + "\t" + r.Name + "\n" }

// Checkpoint records the objects a migration has finished with, one
// "resource<TAB>namespace<TAB>name" line each, so an interrupted run can
// resume. Lines are written as objects finish; a torn last line is ignored
// on load.
type Checkpoint struct {
	f    *os.File
	w    *bufio.Writer
	done map[Ref]bool
	last time.Time
}

// OpenCheckpoint opens the checkpoint file at path. With resume it loads
// the objects already done and appends; without, it starts the file over.
func OpenCheckpoint(path string, resume bool) (*Checkpoint, error) {
	c := &Checkpoint{done: map[Ref]bool{}}
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if resume {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		lines := strings.Split(string(b), "\n")
		// The last element is "" after a final newline, or a torn line.
		for _, ln := range lines[:len(lines)-1] {
			f := strings.Split(ln, "\t")
			if len(f) == 3 {
				c.done[Ref{f[0], f[1], f[2]}] = true
			}
		}
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
		if n := len(lines[len(lines)-1]); n > 0 {
			// Drop a torn last line so appends start on a fresh one.
			if err := os.Truncate(path, int64(len(b)-n)); err != nil {
				return nil, err
			}
		}
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, err
	}
	c.f, c.w = f, bufio.NewWriter(f)
	return c, nil
}

// Done reports whether ref was recorded.
func (c *Checkpoint) Done(ref Ref) bool { return c != nil && c.done[ref] }

// Len is the number of objects recorded.
func (c *Checkpoint) Len() int { return len(c.done) }

// Mark records ref. The file is flushed at least once a second.
func (c *Checkpoint) Mark(ref Ref) error {
	if c == nil {
		return nil
	}
	c.done[ref] = true
	if _, err := c.w.WriteString(ref.line()); err != nil {
		return err
	}
	if time.Since(c.last) > time.Second {
		c.last = time.Now()
		return c.w.Flush()
	}
	return nil
}

// Close flushes and closes the file.
func (c *Checkpoint) Close() error {
	if c == nil {
		return nil
	}
	err := c.w.Flush()
	if err2 := c.f.Sync(); err == nil {
		err = err2
	}
	if err2 := c.f.Close(); err == nil {
		err = err2
	}
	return err
}

// Progress is told about the migration's progress; a progress bar
// implements it.
type Progress interface {
	Start(resource string, total int64)
	Add(n int)
	Finish()
}

// MigrateOptions configure Migrate.
type MigrateOptions struct {
	Client    dynamic.Interface
	Resources []Resource
	// Namespace limits the migration to one namespace; "" means all.
	Namespace string
	// Stored, when set, tells how an object is stored in etcd (from
	// StoredValues); ok is false when it is not known. Objects known to be
	// current are skipped. Without it every object gets a no-op update, and
	// the apiserver writes only the stale ones.
	Stored func(res Resource, namespace, name string) (v Value, ok bool)
	// CurrentKeyID and Provider decide staleness of stored values, as in
	// IsStale. Without CurrentKeyID, kms v2 values are not known to be
	// current and are rewritten.
	CurrentKeyID, Provider string
	// Rate limits updates per second; 0 means no limit.
	Rate float64
	// PageSize of the list calls; 0 means 500.
	PageSize int64
	// Checkpoint, when set, records finished objects and skips recorded
	// ones.
	Checkpoint *Checkpoint
	// DryRun lists and classifies but does not update.
	DryRun bool
	// Progress, when set, is told about progress.
	Progress Progress
	// Log, when set, gets a line per failure.
	Log io.Writer
}

// Summary is the outcome of Migrate.
type Summary struct {
	Listed int `json:"listed"`
	// Rewritten objects got a no-op update.
	Rewritten int `json:"rewritten"`
	// Current objects were already stored with the current key_id.
	Current int `json:"skipped_current"`
	// Resumed objects were done by an earlier run (the checkpoint).
	Resumed int `json:"skipped_checkpoint"`
	// Gone objects were deleted between the list and the update.
	Gone int `json:"skipped_deleted"`
	// Failed objects could not be updated; see Errors.
	Failed    int                `json:"failed"`
	Errors    []string           `json:"errors,omitempty"`
	Resources map[string]*Counts `json:"resources"`
	Duration  time.Duration      `json:"duration_ns"`
}

// Counts are one resource's share of a Summary.
type Counts struct {
	Listed    int `json:"listed"`
	Rewritten int `json:"rewritten"`
	Skipped   int `json:"skipped"`
	Failed    int `json:"failed"`
}

const maxErrors = 20

// Migrate rewrites the objects of the given resources that are stale (or
// of unknown state) with a no-op update, so the apiserver stores them
// again with its current write provider and key_id. It pages through the
// lists, is safe while the cluster serves traffic (an update conflicts and
// is retried on the newest version when someone else wrote the object
// meanwhile, and such a write already re-encrypted it), and returns an
// error only when it cannot go on (failures of single objects are counted
// in the Summary).
func Migrate(ctx context.Context, opts MigrateOptions) (*Summary, error) {
	start := time.Now()
	sum := &Summary{Resources: map[string]*Counts{}}
	var lim *rate.Limiter
	if opts.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(opts.Rate), 1)
	}
	pageSize := opts.PageSize
	if pageSize <= 0 {
		pageSize = 500
	}
	for _, res := range opts.Resources {
		cnt := &Counts{}
		sum.Resources[res.Name] = cnt
		var ri dynamic.ResourceInterface = opts.Client.Resource(res.GVR)
		if res.Namespaced && opts.Namespace != "" {
			ri = opts.Client.Resource(res.GVR).Namespace(opts.Namespace)
		}
		if opts.Progress != nil {
			total := int64(-1)
			if l, err := ri.List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
				total = int64(len(l.Items))
				if l.GetRemainingItemCount() != nil {
					total += *l.GetRemainingItemCount()
				}
			}
			opts.Progress.Start(res.Name, total)
		}
		seen := map[Ref]bool{}
		cont := ""
		for {
			list, err := ri.List(ctx, metav1.ListOptions{Limit: pageSize, Continue: cont})
			if apierrors.IsResourceExpired(err) && cont != "" {
				// The continue token outlived its revision (compaction):
				// list again from the start; objects done are remembered.
				cont = ""
				continue
			}
			if err != nil {
				if opts.Progress != nil {
					opts.Progress.Finish()
				}
				sum.Duration = time.Since(start)
				return sum, fmt.Errorf("listing %s: %w", res.Name, err)
			}
			for i := range list.Items {
				obj := &list.Items[i]
				ref := Ref{res.Name, obj.GetNamespace(), obj.GetName()}
				if seen[ref] {
					continue
				}
				seen[ref] = true
				sum.Listed++
				cnt.Listed++
				err := migrateOne(ctx, ri, res, obj, ref, lim, &opts, sum, cnt)
				if opts.Progress != nil {
					opts.Progress.Add(1)
				}
				if err != nil {
					if opts.Progress != nil {
						opts.Progress.Finish()
					}
					sum.Duration = time.Since(start)
					return sum, err
				}
			}
			cont = list.GetContinue()
			if cont == "" {
				break
			}
		}
		if opts.Progress != nil {
			opts.Progress.Finish()
		}
	}
	sum.Duration = time.Since(start)
	return sum, nil
}

// migrateOne handles one listed object. It returns an error only for
// cancellation and checkpoint failures.
func migrateOne(ctx context.Context, ri dynamic.ResourceInterface, res Resource, obj *unstructured.Unstructured, ref Ref,
	lim *rate.Limiter, opts *MigrateOptions, sum *Summary, cnt *Counts) error {
	if opts.Checkpoint.Done(ref) {
		sum.Resumed++
		cnt.Skipped++
		return nil
	}
	if opts.Stored != nil {
		if v, ok := opts.Stored(res, ref.Namespace, ref.Name); ok && !IsStale(v, opts.CurrentKeyID, opts.Provider) && opts.CurrentKeyID != "" {
			sum.Current++
			cnt.Skipped++
			return opts.Checkpoint.Mark(ref)
		}
	}
	if opts.DryRun {
		sum.Rewritten++
		cnt.Rewritten++
		return nil
	}
	if lim != nil {
		if err := lim.Wait(ctx); err != nil {
			return err
		}
	}
	if res.Namespaced {
		ri = opts.Client.Resource(res.GVR).Namespace(ref.Namespace)
	}
	err := rewrite(ctx, ri, obj)
	switch {
	case err == nil:
		sum.Rewritten++
		cnt.Rewritten++
		return opts.Checkpoint.Mark(ref)
	case apierrors.IsNotFound(err):
		sum.Gone++
		cnt.Skipped++
		return opts.Checkpoint.Mark(ref)
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		sum.Failed++
		cnt.Failed++
		msg := fmt.Sprintf("%s %s: %v", res.Name, nsName(ref), err)
		if len(sum.Errors) < maxErrors {
			sum.Errors = append(sum.Errors, msg)
		}
		if opts.Log != nil {
			fmt.Fprintln(opts.Log, "coffer: "+msg)
		}
		return nil
	}
}

func nsName(r Ref) string {
	if r.Namespace == "" {
		return r.Name
	}
	return r.Namespace + "/" + r.Name
}

// rewrite sends a no-op update of obj. On a conflict it gets the newest
// version and tries again: the conflicting writer re-encrypted the object
// already, but the newest version is rewritten anyway so the outcome never
// depends on that writer's timing.
func rewrite(ctx context.Context, ri dynamic.ResourceInterface, obj *unstructured.Unstructured) error {
	const attempts = 5
	var err error
	for i := 0; i < attempts; i++ {
		_, err = ri.Update(ctx, obj, metav1.UpdateOptions{FieldManager: "coffer-k8s-migrate"})
		if !apierrors.IsConflict(err) {
			return err
		}
		if obj, err = ri.Get(ctx, obj.GetName(), metav1.GetOptions{}); err != nil {
			return err
		}
	}
	return err
}

// StoredValues reads how the objects of the given resources are stored
// in etcd (read-only) and returns a lookup for MigrateOptions.Stored.
func StoredValues(ctx context.Context, src Source, prefix string, resources []Resource, pageSize int64) (func(Resource, string, string) (Value, bool), error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	byKey := map[string]Value{}
	var names []string
	for _, r := range resources {
		names = append(names, r.Name)
	}
	for _, p := range scanPrefixes(prefix, names) {
		if _, err := Walk(ctx, src, p, pageSize, func(kv KV) { byKey[kv.Key] = Classify(kv.Value) }); err != nil {
			return nil, err
		}
	}
	return func(res Resource, ns, name string) (Value, bool) {
		for _, k := range objectKeys(prefix, res, ns, name) {
			if v, ok := byKey[k]; ok {
				return v, true
			}
		}
		return Value{}, false
	}, nil
}

// objectKeys are the etcd keys an object may be stored under.
func objectKeys(prefix string, res Resource, ns, name string) []string {
	tail := name
	if ns != "" {
		tail = ns + "/" + name
	}
	keys := []string{prefix + res.GVR.Resource + "/" + tail}
	if res.GVR.Group != "" {
		keys = append(keys, prefix+res.GVR.Group+"/"+res.GVR.Resource+"/"+tail)
	}
	switch {
	case res.GVR.Group == "" && res.GVR.Resource == "services":
		keys = append(keys, prefix+"services/specs/"+tail)
	case res.GVR.Group == "" && res.GVR.Resource == "endpoints":
		keys = append(keys, prefix+"services/endpoints/"+tail)
	}
	return keys
}
