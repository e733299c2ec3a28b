package policy

// MayAllow reports whether some request for action could be allowed by the
// set: whether any allow statement names the action, whatever its
// resources, principals and conditions. A false answer is final (the set
// denies action on every resource, for every context), so a server can
// refuse a request before it reads the body; a true answer decides nothing.
// A nil set allows nothing.
func (s *Set) MayAllow(action string) bool {
	if s == nil {
		return false
	}
	ai, ok := actionIndex[action]
	return ok && len(s.allow[ai]) > 0
}
