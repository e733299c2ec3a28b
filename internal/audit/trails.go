package audit

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"slices"
)

// TrailsOptions tune VerifyTrails.
type TrailsOptions struct {
	// PublicKey checks the signatures of every trail without an entry in
	// PublicKeys; nil trusts each trail's first signed line's key.
	PublicKey ed25519.PublicKey
	// PublicKeys are the keys of particular replicas (replicas with
	// their own data directories have their own audit keys).
	PublicKeys map[string]ed25519.PublicKey
	// AllowOpenTail accepts unsigned records at the end of every trail.
	AllowOpenTail bool
	// FirstSeq is the first sequence number of a replica's trail kept
	// after retention ("" for the log without replica id), and
	// DefaultFirstSeq that of the others (0: 1).
	FirstSeq        map[string]uint64
	DefaultFirstSeq uint64
	// Replicas selects the trails verified; empty: every one found. A
	// replica selected but without files is reported as missing.
	Replicas []string
}

// ReplicaResult is the verification of one replica's trail. Its Replica
// is "" for a log written before replica ids that no replica continues.
type ReplicaResult struct {
	VerifyResult
	// ContinuesLegacy says the trail continues the log without replica id
	// found beside it: that log's files were verified first, as the head
	// of this chain.
	ContinuesLegacy bool `json:"continues_legacy,omitempty"`
}

// VerifyTrails verifies the trails of several replicas, each as its own
// chain: paths are directories (their log files are taken) or files,
// grouped by the replica their names carry. A trail must be whole: a
// record moved from another replica's trail, a file of another replica,
// a missing file or records cut from its head are reported in that
// replica's result. The log without replica id that a replica continued
// after an upgrade is verified as the head of that replica's chain. The
// results are in replica order; the error is for I/O failures only.
func VerifyTrails(paths []string, opt TrailsOptions) ([]ReplicaResult, error) {
	groups, err := Trails(paths)
	if err != nil {
		return nil, err
	}
	// The log without replica id, if any, and the replica continuing it:
	// the first whose first record chains to that log's last line.
	var legacy []string
	for _, g := range groups {
		if _, _, named := parseFileName(g.Files[0]); g.Replica == "" && named {
			legacy = g.Files
		}
	}
	heir := ""
	if legacy != nil {
		if seq, hash, ok, err := chainEnd(legacy); err != nil {
			return nil, err
		} else if ok {
			for _, g := range groups {
				if g.Replica == "" {
					continue
				}
				s, prev, err := firstHead(g.Files[0])
				if err != nil {
					return nil, err
				}
				if s == seq+1 && prev == hash {
					heir = g.Replica
					break
				}
			}
		}
	}
	selected := func(r string) bool { return len(opt.Replicas) == 0 || slices.Contains(opt.Replicas, r) }
	var out []ReplicaResult
	seen := map[string]bool{}
	for _, g := range groups {
		if !selected(g.Replica) || g.Replica == "" && heir != "" && slices.Equal(g.Files, legacy) {
			continue
		}
		seen[g.Replica] = true
		files := g.Files
		res := ReplicaResult{ContinuesLegacy: g.Replica != "" && g.Replica == heir}
		if res.ContinuesLegacy {
			files = append(slices.Clone(legacy), files...)
		}
		vo := VerifyOptions{PublicKey: opt.PublicKey, AllowOpenTail: opt.AllowOpenTail, FirstSeq: opt.DefaultFirstSeq, Replica: g.Replica}
		if k, ok := opt.PublicKeys[g.Replica]; ok {
			vo.PublicKey = k
		}
		if n, ok := opt.FirstSeq[g.Replica]; ok {
			vo.FirstSeq = n
		}
		res.VerifyResult, err = Verify(files, vo)
		if err != nil {
			return out, err
		}
		if res.Replica == "" {
			res.Replica = g.Replica
		}
		if res.Problem != nil {
			res.Problem.Replica = res.Replica
		}
		out = append(out, res)
	}
	for _, r := range opt.Replicas {
		if !seen[r] {
			out = append(out, ReplicaResult{VerifyResult: VerifyResult{Replica: r, Problem: &Problem{Replica: r, Kind: ProblemMissing,
				Message: fmt.Sprintf("no audit file of replica %q in the paths given: its whole trail is missing (or the replica id is wrong)", r)}}})
		}
	}
	slices.SortStableFunc(out, func(a, b ReplicaResult) int {
		switch {
		case a.Replica < b.Replica:
			return -1
		case a.Replica > b.Replica:
			return 1
		}
		return 0
	})
	return out, nil
}

// chainEnd returns the sequence number and hash of the last line of a
// trail's files; ok is false when they hold no complete line.
func chainEnd(files []string) (seq uint64, hash string, ok bool, err error) {
	for i := len(files) - 1; i >= 0; i-- {
		s, h, _, err := lastLine(files[i])
		if err != nil {
			return 0, "", false, err
		}
		if s > 0 {
			return s, h, true, nil
		}
	}
	return 0, "", false, nil
}

// firstHead returns the sequence number and prev hash of a file's first
// line (0 when it has none).
func firstHead(name string) (seq uint64, prev string, err error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	err = eachLine(f, func(line []byte) error {
		s, p, perr := parseHead(line)
		if perr == nil {
			seq, prev = s, string(p)
		}
		return errStop
	})
	return seq, prev, err
}
