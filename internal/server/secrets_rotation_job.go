package server

import (
	"context"
	"strconv"
	"time"

	"github.com/cofferkms/coffer/internal/audit"
	"github.com/cofferkms/coffer/internal/secrets"
)

// rotationJobPrincipal is who the rotation job's records name.
var rotationJobPrincipal = audit.Principal{Kind: "system", ID: "secret-rotation-job"}

// recordScheduledRotation writes the audit records of a rotation the
// background job runs (secrets.Service.RotateDue), as a secret:Rotate
// request is recorded: an intent before it starts (if it cannot be
// written the rotation is not run) and the outcome after, naming the
// secret and its versions, never a value or the webhook URL. The outcome
// feeds the alert engine like a request's.
func (s *Server) recordScheduledRotation(ctx context.Context, ev secrets.RotationEvent) error {
	rec := &audit.Record{Type: audit.TypeEvent, Time: time.Now().UTC(), Door: "job", Action: "secret:Rotate",
		Principal: rotationJobPrincipal, Resource: "secret/" + ev.Name}
	if !ev.Done {
		rec.Phase = audit.PhaseIntent
		rec.Detail = "scheduled secret_version=" + versionString(ev.Current)
		if ev.Pending != 0 {
			rec.Detail += " pending_version=" + versionString(ev.Pending)
		}
		return s.audit.Record(ctx, rec)
	}
	res := ev.Result
	switch {
	case ev.Err == nil:
		rec.Outcome = "ok"
		rec.Detail = "scheduled secret_version=" + versionString(res.CurrentVersion) + " previous_version=" + versionString(res.PreviousVersion)
	default:
		_, code, _ := classify(ev.Err)
		rec.Outcome, rec.ErrorCode = "error", code
		// Failed: current is unchanged; a pending version may stay.
		rec.Detail = "scheduled secret_version=" + versionString(ev.Current)
		if res.PendingVersion != 0 {
			rec.Detail += " pending_version=" + versionString(res.PendingVersion)
		}
	}
	if err := s.audit.Record(ctx, rec); err != nil {
		return err
	}
	if s.alerts != nil && !s.alerts.Feed(rec) && s.metrics != nil {
		s.metrics.Dropped("alert_engine", 1)
	}
	return nil
}

func versionString(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
