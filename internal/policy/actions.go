package policy

import (
	"slices"
	"strings"
)

// ResourceKind says what an action's resource names. Lint uses it to find
// statements whose resources can never meet their actions.
type ResourceKind string

// Resource kinds.
const (
	ResourceNone      ResourceKind = ""          // the action acts on no one resource (List, sys:*)
	ResourceKey       ResourceKind = "key"       // a key id or alias/NAME
	ResourceSecret    ResourceKind = "secret"    // secret/PATH
	ResourceToken     ResourceKind = "token"     // a token accessor acc_...
	ResourceRole      ResourceKind = "role"      // role/NAME
	ResourcePolicy    ResourceKind = "policy"    // policy/NAME
	ResourceCluster   ResourceKind = "cluster"   // cluster/NAME
	ResourceAccessKey ResourceKind = "accesskey" // an access key id cfak_...
)

// Action is one entry of the action catalogue.
type Action struct {
	Name     string
	Resource ResourceKind
	// Context reports whether requests of this action carry an encryption
	// context, so that context conditions can match.
	Context bool
	// Reads reports whether the action discloses key material or plaintext
	// (Lint asks for conditions on such allows).
	Reads bool
}

// catalogue is every action a policy may name. The server authorizes with
// exactly these names; a policy that names anything else is rejected, so a
// typo cannot silently grant nothing (or, with a glob, too much).
var catalogue = []Action{
	{Name: "kms:Encrypt", Resource: ResourceKey, Context: true},
	{Name: "kms:Decrypt", Resource: ResourceKey, Context: true, Reads: true},
	{Name: "kms:ReEncrypt", Resource: ResourceKey, Context: true, Reads: true},
	{Name: "kms:ReEncryptTo", Resource: ResourceKey, Context: true},
	{Name: "kms:GenerateDataKey", Resource: ResourceKey, Context: true, Reads: true},
	{Name: "kms:GenerateDataKeyWithoutPlaintext", Resource: ResourceKey, Context: true},
	{Name: "kms:GenerateRandom"},

	{Name: "key:Create", Resource: ResourceKey},
	{Name: "key:List"},
	{Name: "key:Describe", Resource: ResourceKey},
	{Name: "key:Update", Resource: ResourceKey},
	{Name: "key:Enable", Resource: ResourceKey},
	{Name: "key:Disable", Resource: ResourceKey},
	{Name: "key:Rotate", Resource: ResourceKey},
	{Name: "key:ScheduleDeletion", Resource: ResourceKey},
	{Name: "key:CancelDeletion", Resource: ResourceKey},
	{Name: "key:CreateAlias", Resource: ResourceKey},
	{Name: "key:ListAliases"},
	{Name: "key:DeleteAlias", Resource: ResourceKey},
	{Name: "key:GetKeyPolicy", Resource: ResourceKey},
	{Name: "key:PutKeyPolicy", Resource: ResourceKey},

	{Name: "secret:Read", Resource: ResourceSecret, Reads: true},
	{Name: "secret:Write", Resource: ResourceSecret},
	{Name: "secret:List", Resource: ResourceSecret},
	{Name: "secret:Delete", Resource: ResourceSecret},
	{Name: "secret:Rotate", Resource: ResourceSecret},

	{Name: "token:Create"},
	{Name: "token:LookupSelf"},
	{Name: "token:Lookup", Resource: ResourceToken},
	{Name: "token:List"},
	{Name: "token:Renew", Resource: ResourceToken},
	{Name: "token:RenewSelf"},
	{Name: "token:Revoke", Resource: ResourceToken},
	{Name: "token:RevokeSelf"},
	{Name: "token:ReportLeaked"},
	{Name: "token:RevokeRole", Resource: ResourceRole},
	{Name: "token:RevokePrincipal"},

	{Name: "auth:AssumeRole", Resource: ResourceRole},
	{Name: "role:Create", Resource: ResourceRole},
	{Name: "role:Read", Resource: ResourceRole},
	{Name: "role:List"},
	{Name: "role:Update", Resource: ResourceRole},
	{Name: "role:Delete", Resource: ResourceRole},

	{Name: "accesskey:Create"},
	{Name: "accesskey:List"},
	{Name: "accesskey:Read", Resource: ResourceAccessKey},
	{Name: "accesskey:Update", Resource: ResourceAccessKey},
	{Name: "accesskey:Delete", Resource: ResourceAccessKey},

	{Name: "cluster:Register", Resource: ResourceCluster},
	{Name: "cluster:Read", Resource: ResourceCluster},
	{Name: "cluster:List"},
	{Name: "cluster:Delete", Resource: ResourceCluster},

	{Name: "policy:Read", Resource: ResourcePolicy},
	{Name: "policy:List"},
	{Name: "policy:Write", Resource: ResourcePolicy},
	{Name: "policy:Delete", Resource: ResourcePolicy},
	{Name: "policy:Simulate"},

	{Name: "audit:Read"},
	{Name: "audit:Hash"},
	{Name: "audit:PublicKey"},

	{Name: "sys:Init"},
	{Name: "sys:Unseal"},
	{Name: "sys:Seal"},
	{Name: "sys:SealStatus"},
	{Name: "sys:RotateKeyring"},
	{Name: "sys:RewrapKeyring"},
	{Name: "sys:ReadMembers"},
	{Name: "sys:Snapshot"}, // a whole-store backup: barrier ciphertexts only
}

// actionIndex maps an action name to its position in catalogue.
var actionIndex = func() map[string]int {
	if len(catalogue) > len(actionSet{})*64 {
		panic("policy: catalogue outgrew actionSet")
	}
	m := make(map[string]int, len(catalogue))
	for i, a := range catalogue {
		if _, dup := m[a.Name]; dup {
			panic("policy: action " + a.Name + " listed twice")
		}
		m[a.Name] = i
	}
	return m
}()

// Actions returns the action catalogue, in a stable order.
func Actions() []Action { return slices.Clone(catalogue) }

// LookupAction returns the catalogue entry of name.
func LookupAction(name string) (Action, bool) {
	i, ok := actionIndex[name]
	if !ok {
		return Action{}, false
	}
	return catalogue[i], true
}

// actionSet is a bit set over the catalogue (up to 128 actions; the
// initialisation of actionIndex panics past that).
type actionSet [2]uint64

func (s *actionSet) add(i int)      { s[i/64] |= 1 << (i % 64) }
func (s *actionSet) has(i int) bool { return s[i/64]&(1<<(i%64)) != 0 }
func (s *actionSet) covers(o *actionSet) bool {
	for i := range s {
		if o[i]&^s[i] != 0 {
			return false
		}
	}
	return true
}
func (s *actionSet) empty() bool {
	for _, w := range s {
		if w != 0 {
			return false
		}
	}
	return true
}

// suggestAction returns a catalogue action close to a misspelt name, or "".
func suggestAction(name string) string {
	best, bestD := "", 4
	for _, a := range catalogue {
		if strings.EqualFold(a.Name, name) {
			return a.Name
		}
		if d := distance(strings.ToLower(a.Name), strings.ToLower(name)); d < bestD {
			best, bestD = a.Name, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
