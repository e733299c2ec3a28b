package cli

import (
	"context"
	"time"

	"github.com/cofferkms/coffer/client"
)

// maxServerWait is the longest wait the server takes (POST
// /v1/secrets/wait); a longer --interval waits in several calls.
const maxServerWait = 5 * time.Minute

// awaitVersions blocks, for at most budget, until one of the secrets in
// cur (name -> the version COMMAND runs with) gets another current version
// on the server: a long-poll, answered within milliseconds of the write,
// instead of a read of every secret each --interval. changed reports that
// one did. waited reports that the server held the wait as asked, so the
// next check may start at once; it is false when the server has no wait
// route (an older server), refuses it (no secret:List on a name, busy) or
// answers early without a change (shutting down), and --watch then keeps
// to its --interval.
func awaitVersions(ctx context.Context, c *client.Client, cur map[string]uint32, budget time.Duration) (changed, waited bool) {
	if len(cur) == 0 {
		return false, false
	}
	deadline := time.Now().Add(budget)
	held := false // a budget too short for any wait (--interval 1s) is no held wait
	for {
		left := time.Until(deadline)
		if left < time.Second {
			return false, held
		}
		ask := min(left, maxServerWait)
		start := time.Now()
		res, err := c.SecretWait(ctx, cur, ask)
		if err != nil || len(res.Denied) > 0 {
			return false, false
		}
		if len(res.Changed) > 0 {
			return true, true
		}
		if time.Since(start) < ask/2 {
			return false, false
		}
		held = true
	}
}
