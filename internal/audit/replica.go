package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// MaxReplicaID bounds the length of a replica id.
const MaxReplicaID = 128

// ValidateReplicaID checks that id can name a replica's trail: 1 to
// MaxReplicaID characters from [A-Za-z0-9._-], starting and ending with a
// letter or digit. It appears in file names and in every record, so it
// can neither leave the audit directory ("/", "..") nor need escaping.
func ValidateReplicaID(id string) error {
	if id == "" {
		return errors.New("the replica id is empty")
	}
	if len(id) > MaxReplicaID {
		return fmt.Errorf("the replica id is %d bytes long; at most %d are allowed", len(id), MaxReplicaID)
	}
	alnum := func(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !alnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("the replica id %q holds %q: use letters, digits, '.', '_' and '-' only", id, c)
		}
	}
	if !alnum(id[0]) || !alnum(id[len(id)-1]) {
		return fmt.Errorf("the replica id %q must start and end with a letter or a digit", id)
	}
	return nil
}

// seqDigits is the width of the zero-padded sequence number in file names.
const seqDigits = 20

// fileName is the name of the file of replica whose first line is
// firstSeq: audit-<replica>-<20 digits>.jsonl, or audit-<20 digits>.jsonl
// for a trail without a replica id (the names of logs written before
// replica ids).
func fileName(dir, replica string, firstSeq uint64) string {
	if replica == "" {
		return filepath.Join(dir, fmt.Sprintf("audit-%020d.jsonl", firstSeq))
	}
	return filepath.Join(dir, fmt.Sprintf("audit-%s-%020d.jsonl", replica, firstSeq))
}

// parseFileName reads the replica and first sequence number a log file's
// name carries; ok is false for names that are not log files. A name
// without a replica (a log written before replica ids) gives replica "".
func parseFileName(name string) (replica string, seq uint64, ok bool) {
	s, ok := strings.CutPrefix(filepath.Base(name), "audit-")
	if !ok {
		return "", 0, false
	}
	if s, ok = strings.CutSuffix(s, ".jsonl"); !ok || len(s) < seqDigits {
		return "", 0, false
	}
	digits := s[len(s)-seqDigits:]
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return "", 0, false
		}
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return "", 0, false
	}
	if len(s) == seqDigits {
		return "", n, true
	}
	rest, ok := strings.CutSuffix(s[:len(s)-seqDigits], "-")
	if !ok || ValidateReplicaID(rest) != nil {
		return "", 0, false
	}
	return rest, n, true
}

// nameSeq returns the first sequence number a log file's name carries.
func nameSeq(name string) (uint64, bool) {
	_, n, ok := parseFileName(name)
	return n, ok
}

// TrailFiles are the log files of one replica's trail in chain order.
type TrailFiles struct {
	// Replica is the replica id; "" for a log written before replica ids.
	Replica string
	Files   []string
}

// Trails groups the log files in paths (directories, whose log files are
// taken, or files) by the replica their names carry, each group in chain
// order (names carry a zero-padded first sequence number); the groups are
// sorted by replica id, the log without a replica id first. A file whose
// name is not a log file's forms a group of its own, with replica ""
// (Verify takes the replica its records name).
func Trails(paths []string) ([]TrailFiles, error) {
	by := map[string][]string{}
	var unnamed []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			p = filepath.Clean(p)
			if r, _, ok := parseFileName(p); ok {
				by[r] = append(by[r], p)
			} else {
				unnamed = append(unnamed, p)
			}
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if r, _, ok := parseFileName(e.Name()); ok && e.Type().IsRegular() {
				by[r] = append(by[r], filepath.Join(p, e.Name()))
			}
		}
	}
	out := make([]TrailFiles, 0, len(by)+len(unnamed))
	for r, fs := range by {
		slices.SortFunc(fs, func(a, b string) int {
			_, x, _ := parseFileName(a)
			_, y, _ := parseFileName(b)
			if x != y {
				if x < y {
					return -1
				}
				return 1
			}
			return strings.Compare(a, b)
		})
		out = append(out, TrailFiles{Replica: r, Files: slices.Compact(fs)})
	}
	slices.SortFunc(out, func(a, b TrailFiles) int { return strings.Compare(a.Replica, b.Replica) })
	for _, f := range unnamed {
		out = append(out, TrailFiles{Replica: "", Files: []string{f}})
	}
	return out, nil
}

// ReplicaFiles lists the log files of one replica in dir, in chain order;
// replica "" lists the files of a log written before replica ids.
func ReplicaFiles(dir, replica string) ([]string, error) {
	ts, err := Trails([]string{dir})
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		if t.Replica == replica {
			return t.Files, nil
		}
	}
	return nil, nil
}

// Files lists the log files in dir: those of a log without replica id
// first, then each replica's, each trail in chain order. A directory
// holding one trail is listed in chain order, as Verify reads it.
func Files(dir string) ([]string, error) {
	ts, err := Trails([]string{dir})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range ts {
		out = append(out, t.Files...)
	}
	return out, nil
}

// legacyClaim is the file by which one replica claims the log without
// replica id found in its directory: that replica continues its chain,
// any other starts its own.
const legacyClaim = "audit-legacy.claim"

// claimLegacy reports whether replica continues the log without replica
// id in dir: the first replica to claim it does (the claim is an O_EXCL
// file naming it), so two replicas sharing the directory cannot fork it.
func claimLegacy(dir, replica string) (bool, error) {
	name := filepath.Join(dir, legacyClaim)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, err = f.WriteString(replica + "\n")
		if serr := f.Sync(); err == nil {
			err = serr
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(name)
			return false, fmt.Errorf("claiming the audit log without replica id in %s: %w", dir, err)
		}
		syncDir(dir)
		return true, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return false, err
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == replica, nil
}

// syncDir makes new names in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
