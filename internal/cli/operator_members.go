package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferkms/coffer/client"
)

// newOperatorMembersCmd builds `coffer operator members`.
func newOperatorMembersCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the server's replicas and which one runs the background jobs (needs sys:ReadMembers)",
		Long: `List the replicas that share the server's store, from the records they keep
alive in it: id, advertised address, version, whether each is sealed, when it
last renewed its record, and which one holds the job leadership (it runs
automatic rotation and deletion, token expiry sweeps and the key alert
rules). A replica that stops renewing its record (crashed, cut off, paused)
vanishes from the list within the lease TTL (ha.lease_ttl, default 10s), and
another one takes the leadership over. A single-node server lists itself.`,
		Example: "  coffer operator members\n  coffer operator members -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			ms, err := c.Members(cmd.Context())
			if err != nil {
				return err
			}
			if ms == nil {
				ms = []client.Member{}
			}
			if wantJSON(cmd) {
				return printData(cmd, client.MemberList{Members: ms})
			}
			if len(ms) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No replicas.")
				return nil
			}
			now := time.Now()
			rows := make([][]string, 0, len(ms))
			for _, m := range ms {
				sealed, leader := "no", ""
				if m.Sealed {
					sealed = "yes"
				}
				if m.Leader {
					leader = "*"
				}
				rows = append(rows, []string{m.ID, orDash(m.Address), orDash(m.Version), sealed, heartbeatAge(now, m.LastHeartbeat), leader})
			}
			return printTable(cmd.OutOrStdout(), []string{"ID", "ADDRESS", "VERSION", "SEALED", "LAST HEARTBEAT", "LEADER"}, rows)
		},
	}
}

// heartbeatAge shows a heartbeat as its age (its time with -o json).
func heartbeatAge(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(100 * time.Millisecond)
	if d < 0 {
		d = 0 // the replica's clock is ahead of this one
	}
	return d.String() + " ago"
}
