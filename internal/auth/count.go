package auth

// Count is the number of tokens held in memory (0 while sealed), for the
// active-tokens metric.
func (t *Tokens) Count() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byAccessor)
}
