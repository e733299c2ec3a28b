package secretsync

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MaxWaitNames is the most names one long-poll carries (the server's
// limit); a group watching more runs several polls at once.
const MaxWaitNames = 1000

// groupKey identifies the CofferSecrets that read Coffer with the same
// identity: one role token and one long-poll loop serve them all.
type groupKey struct {
	namespace, serviceAccount, role string
}

func (k groupKey) String() string {
	return fmt.Sprintf("%s/%s as role %s", k.namespace, k.serviceAccount, k.role)
}

// group is the watch state of one identity. Fields but the token's are
// guarded by controller.mu.
type group struct {
	key    groupKey
	names  map[string]map[string]bool // Coffer secret -> CofferSecret keys naming it
	known  map[string]uint32          // Coffer secret -> version last synced or reported
	denied map[string]denial          // Coffer secret -> when to wait on it again
	kick   chan struct{}
	cancel context.CancelFunc

	tokMu   sync.Mutex
	token   string
	issued  time.Time
	expires time.Time
}

type denial struct {
	until    time.Time
	attempts int
}

// kickLocked makes the group's loop start a new wait with its current
// names (c.mu held or not: the channel has room for one).
func (g *group) kickLocked() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// track records that the CofferSecret key names secret as identity gk,
// starting the group's loop when it is new. synced is the version the
// resource's status says was last synced.
func (c *controller) track(key string, gk groupKey, secret string, synced uint32) *group {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.tracked[key]; ok && (old.group != gk || old.secret != secret) {
		c.untrackLocked(key)
	}
	g := c.groups[gk]
	if g == nil {
		ctx, cancel := context.WithCancel(c.ctx)
		g = &group{key: gk, names: map[string]map[string]bool{}, known: map[string]uint32{}, denied: map[string]denial{},
			kick: make(chan struct{}, 1), cancel: cancel}
		c.groups[gk] = g
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.watch(ctx, g)
		}()
	}
	c.tracked[key] = tracked{group: gk, secret: secret}
	if g.names[secret] == nil {
		g.names[secret] = map[string]bool{}
		if _, ok := g.known[secret]; !ok {
			g.known[secret] = synced
		}
		g.kickLocked()
	}
	g.names[secret][key] = true
	return g
}

// untrack forgets a CofferSecret that is gone or no longer valid.
func (c *controller) untrack(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.untrackLocked(key)
	delete(c.synced, key)
}

func (c *controller) untrackLocked(key string) {
	t, ok := c.tracked[key]
	if !ok {
		return
	}
	delete(c.tracked, key)
	g := c.groups[t.group]
	if g == nil {
		return
	}
	delete(g.names[t.secret], key)
	if len(g.names[t.secret]) == 0 {
		delete(g.names, t.secret)
		delete(g.known, t.secret)
		delete(g.denied, t.secret)
		g.kickLocked()
	}
	if len(g.names) == 0 {
		g.cancel()
		delete(c.groups, t.group)
		g.tokMu.Lock()
		tok := g.token
		g.token = ""
		g.tokMu.Unlock()
		c.revokeToken(tok)
	}
}

// noteRead records the version a reconcile read: it is what the next wait
// holds. It returns whether the long-poll may not watch the secret (the
// last wait that named it denied it): then new versions come only with a
// resync. A denial ends when a wait that names it again answers.
func (c *controller) noteRead(g *group, secret string, version uint32) (unwatched bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g.names[secret] == nil {
		return false
	}
	_, unwatched = g.denied[secret]
	if g.known[secret] != version {
		g.known[secret] = version
		g.kickLocked()
	}
	return unwatched
}

// unwatched tells whether the long-poll's last word on secret was a
// denial.
func (c *controller) unwatched(g *group, secret string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := g.denied[secret]
	return ok
}

// knownVersion is the version the group's wait holds for secret.
func (c *controller) knownVersion(g *group, secret string) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return g.known[secret]
}

// token returns the group's role token, logging in again with a fresh
// service-account token when there is none or it nears its expiry.
func (c *controller) token(ctx context.Context, g *group) (string, error) {
	g.tokMu.Lock()
	defer g.tokMu.Unlock()
	now := time.Now()
	if g.token != "" {
		if g.expires.IsZero() {
			return g.token, nil
		}
		// Renew when less than a fifth of the lifetime (at least 30 s)
		// is left, so a wait never runs on an expiring token.
		margin := max(g.expires.Sub(g.issued)/5, 30*time.Second)
		if now.Before(g.expires.Add(-margin)) {
			return g.token, nil
		}
	}
	jwt, err := c.saToken(ctx, g.key.namespace, g.key.serviceAccount)
	if err != nil {
		return "", err
	}
	tok, exp, err := c.cfg.Coffer.Login(ctx, g.key.role, jwt)
	if err != nil {
		return "", fmt.Errorf("logging in to Coffer role %q as service account %s/%s: %w", g.key.role, g.key.namespace, g.key.serviceAccount, err)
	}
	c.forgetToken(g.token)
	g.token, g.issued, g.expires = tok, now, exp
	return tok, nil
}

// dropToken forgets a token Coffer refused (revoked or expired).
func (c *controller) dropToken(g *group, tok string) {
	g.tokMu.Lock()
	defer g.tokMu.Unlock()
	if g.token == tok {
		g.token = ""
		c.forgetToken(tok)
	}
}

// revokeToken revokes, in the background, the role token of a group that
// has no CofferSecret left (a replaced token is left to expire: a wait may
// still be using it).
func (c *controller) revokeToken(tok string) {
	if tok == "" {
		return
	}
	r, ok := c.cfg.Coffer.(interface {
		Revoke(ctx context.Context, token string) error
	})
	if !ok {
		c.forgetToken(tok)
		return
	}
	go func() {
		defer c.forgetToken(tok)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Revoke(ctx, tok); err != nil {
			c.cfg.Logger.Debug("revoking an unused role token", "error", err)
		}
	}()
}

// forgetToken lets the Coffer implementation drop what it keeps for a
// token no longer used (ClientCoffer's client of that token).
func (c *controller) forgetToken(tok string) {
	if f, ok := c.cfg.Coffer.(interface{ Forget(string) }); ok && tok != "" {
		f.Forget(tok)
	}
}

// enqueueNaming queues the CofferSecrets that name secret.
func (c *controller) enqueueNaming(g *group, secret string) {
	c.mu.Lock()
	keys := make([]string, 0, len(g.names[secret]))
	for k := range g.names[secret] {
		keys = append(keys, k)
	}
	c.mu.Unlock()
	for _, k := range keys {
		c.queue.Add(k)
	}
}

// watch is a group's loop: it long-polls the versions of the group's
// secrets with the group's role token and queues the CofferSecrets of the
// secrets that changed. Denied secrets leave the wait until their backoff
// ends; their resources are queued so their status says Forbidden.
func (c *controller) watch(ctx context.Context, g *group) {
	backoff := c.cfg.MinRetry
	for ctx.Err() == nil {
		known, nextDenied := c.waitSet(g)
		if len(known) == 0 {
			c.pause(ctx, g, nextDenied)
			continue
		}
		tok, err := c.token(ctx, g)
		if err != nil {
			c.cfg.Logger.Warn("long-poll: no role token", "group", g.key.String(), "error", err)
			c.pause(ctx, g, time.Now().Add(backoff))
			backoff = min(backoff*2, c.cfg.MaxRetry)
			continue
		}
		res, err := c.waitOnce(ctx, g, tok, known)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if statusOf(err) == http.StatusUnauthorized {
				c.dropToken(g, tok)
			}
			c.cfg.Logger.Warn("long-poll failed", "group", g.key.String(), "error", err)
			c.pause(ctx, g, time.Now().Add(backoff))
			backoff = min(backoff*2, c.cfg.MaxRetry)
			continue
		}
		backoff = c.cfg.MinRetry
		c.apply(g, res)
	}
}

// waitSet returns the names to wait on with their versions, and the
// earliest end of a denial (zero if none).
func (c *controller) waitSet(g *group) (map[string]uint32, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var next time.Time
	known := make(map[string]uint32, len(g.names))
	for name := range g.names {
		if d, ok := g.denied[name]; ok && now.Before(d.until) {
			if next.IsZero() || d.until.Before(next) {
				next = d.until
			}
			continue
		}
		known[name] = g.known[name]
	}
	return known, next
}

// pause waits until t (zero: forever), a kick or the end of ctx.
func (c *controller) pause(ctx context.Context, g *group, t time.Time) {
	var timer <-chan time.Time
	if !t.IsZero() {
		tm := time.NewTimer(time.Until(t))
		defer tm.Stop()
		timer = tm.C
	}
	select {
	case <-ctx.Done():
	case <-g.kick:
	case <-timer:
	}
}

// waitOnce runs one wait (one per chunk of MaxWaitNames names, all ended
// when the first returns) and merges their answers. A kick ends it early
// with an empty result.
func (c *controller) waitOnce(ctx context.Context, g *group, tok string, known map[string]uint32) (*waitAnswer, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wasKicked atomic.Bool
	go func() {
		select {
		case <-g.kick:
			wasKicked.Store(true)
			cancel()
		case <-wctx.Done():
		}
	}()
	names := make([]string, 0, len(known))
	for n := range known {
		names = append(names, n)
	}
	slices.Sort(names)
	type answer struct {
		part map[string]uint32
		res  *WaitResult
		err  error
	}
	var chunks int
	answers := make(chan answer, len(names)/MaxWaitNames+1)
	for i := 0; i < len(names); i += MaxWaitNames {
		part := map[string]uint32{}
		for _, n := range names[i:min(i+MaxWaitNames, len(names))] {
			part[n] = known[n]
		}
		chunks++
		go func() {
			r, err := c.cfg.Coffer.SecretWait(wctx, tok, part, c.cfg.Wait)
			answers <- answer{part, r, err}
		}()
	}
	out := &waitAnswer{}
	var firstErr error
	for i := range chunks {
		a := <-answers
		if i == 0 {
			cancel() // the first answer ends the others' waits
			firstErr = a.err
		}
		if a.err == nil {
			out.Changed = append(out.Changed, a.res.Changed...)
			out.Denied = append(out.Denied, a.res.Denied...)
			for n := range a.part {
				out.answered = append(out.answered, n)
			}
		}
	}
	if wasKicked.Load() {
		return nil, nil // cut short: nothing learnt
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// waitAnswer is the merged answer of a wait's requests; answered are the
// names of the requests that answered (the others were cut short).
type waitAnswer struct {
	WaitResult
	answered []string
}

// apply records a wait's answer: changed secrets take the reported
// version and their resources are queued; denied ones back off; a name
// that was denied before and was answered without denial is watched again
// (its resources are queued so their status says so).
func (c *controller) apply(g *group, res *waitAnswer) {
	if res == nil {
		return
	}
	var queue []string
	c.mu.Lock()
	denied := make(map[string]bool, len(res.Denied))
	for _, n := range res.Denied {
		denied[n] = true
	}
	for _, n := range res.answered {
		if _, was := g.denied[n]; was && !denied[n] && g.names[n] != nil {
			delete(g.denied, n)
			queue = append(queue, n)
		}
	}
	for _, ch := range res.Changed {
		if g.names[ch.Name] == nil {
			continue
		}
		g.known[ch.Name] = ch.CurrentVersion
		queue = append(queue, ch.Name)
	}
	now := time.Now()
	for _, name := range res.Denied {
		if g.names[name] == nil {
			continue
		}
		d := g.denied[name]
		d.attempts++
		d.until = now.Add(backoffFor(c.cfg.MinRetry*5, c.cfg.MaxRetry, d.attempts))
		g.denied[name] = d
		queue = append(queue, name)
	}
	c.mu.Unlock()
	for _, name := range queue {
		c.enqueueNaming(g, name)
	}
}

// backoffFor is base doubled per attempt, capped.
func backoffFor(base, maxD time.Duration, attempts int) time.Duration {
	d := base
	for i := 1; i < attempts && d < maxD; i++ {
		d *= 2
	}
	return min(d, maxD)
}
