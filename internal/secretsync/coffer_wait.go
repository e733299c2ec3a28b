package secretsync

import (
	"context"
	"time"
)

// SecretWait implements Coffer.
func (c *ClientCoffer) SecretWait(ctx context.Context, token string, known map[string]uint32, wait time.Duration) (*WaitResult, error) {
	cl, err := c.client(token)
	if err != nil {
		return nil, err
	}
	r, err := cl.SecretWait(ctx, known, wait)
	if err != nil {
		return nil, err
	}
	out := &WaitResult{Denied: r.Denied}
	for _, ch := range r.Changed {
		out.Changed = append(out.Changed, Change{Name: ch.Name, CurrentVersion: ch.CurrentVersion, Deleted: ch.Deleted})
	}
	return out, nil
}
