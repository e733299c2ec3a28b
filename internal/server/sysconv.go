package server

import (
	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/sys"
)

// The REST wire types of the seal and quorum operations (client) and the
// sys service's own types meet here. As in keyconv.go, an answer function
// takes a service call's results as they are and gives the zero answer
// with an error, which handle writes alone.

// wireSealStatus is the REST form of a seal status.
func wireSealStatus(st sys.SealStatus) client.SealStatus {
	return client.SealStatus{Initialized: st.Initialized, Sealed: st.Sealed, Threshold: st.Threshold, Shares: st.Shares,
		Progress: st.Progress, Version: st.Version, Type: st.Type, RecoveryShares: st.RecoveryShares,
		RecoveryThreshold: st.RecoveryThreshold, ConfiguredType: st.ConfiguredType, MigrationPending: st.MigrationPending,
		Seal: wireSealHealth(st.Seal)}
}

// wireSealHealth is the REST form of an auto-unseal's health (nil: none).
func wireSealHealth(h *sys.SealHealth) *client.SealHealth {
	if h == nil {
		return nil
	}
	return &client.SealHealth{Type: h.Type, Info: h.Info, Healthy: h.Healthy, HealthError: h.HealthError, CheckedAt: h.CheckedAt,
		LastUnsealError: h.LastUnsealError, Retrying: h.Retrying, Failures: h.Failures, UnsealSeconds: h.UnsealDuration.Seconds(),
		UnsealedAt: h.UnsealedAt, SealedByOperator: h.SealedByOperator}
}

// sealStatusAnswer is the REST answer of a sys call that returns a seal
// status.
func sealStatusAnswer(st sys.SealStatus, err error) (client.SealStatus, error) {
	if err != nil {
		return client.SealStatus{}, err
	}
	return wireSealStatus(st), nil
}

// initAnswer is the answer of POST /v1/sys/init.
func initAnswer(r sys.InitResult, err error) (client.InitResponse, error) {
	if err != nil {
		return client.InitResponse{}, err
	}
	return client.InitResponse{Shares: r.Shares, RootToken: r.RootToken, Type: r.Type, RecoveryShares: r.RecoveryShares}, nil
}

// generateRootAnswer is the REST answer of a generate-root call.
func generateRootAnswer(st sys.GenerateRootStatus, err error) (client.GenerateRootStatus, error) {
	if err != nil {
		return client.GenerateRootStatus{}, err
	}
	return client.GenerateRootStatus{Started: st.Started, Nonce: st.Nonce, Progress: st.Progress, Required: st.Required,
		OTPLength: st.OTPLength, OTPFingerprint: st.OTPFingerprint, StartedAt: st.StartedAt, Complete: st.Complete,
		EncodedToken: st.EncodedToken}, nil
}

// rekeyAnswer is the REST answer of a rekey call.
func rekeyAnswer(st sys.RekeyStatus, err error) (client.RekeyStatus, error) {
	if err != nil {
		return client.RekeyStatus{}, err
	}
	return client.RekeyStatus{Started: st.Started, Nonce: st.Nonce, Kind: string(st.Kind), Progress: st.Progress,
		Required: st.Required, NewShares: st.NewShares, NewThreshold: st.NewThreshold, Complete: st.Complete, Shares: st.Shares}, nil
}

// migrateSealRequest is the sys request for a POST /v1/sys/migrate-seal
// body.
func migrateSealRequest(req *client.MigrateSealRequest) sys.MigrateSealRequest {
	return sys.MigrateSealRequest{Share: req.Share, Shares: req.Shares, Threshold: req.Threshold, Reset: req.Reset}
}

// migrateSealAnswer is the answer of POST /v1/sys/migrate-seal.
func migrateSealAnswer(r sys.MigrateSealResult, err error) (client.MigrateSealResponse, error) {
	if err != nil {
		return client.MigrateSealResponse{}, err
	}
	return client.MigrateSealResponse{SealStatus: wireSealStatus(r.SealStatus), Complete: r.Complete, Shares: r.Shares,
		RecoveryShares: r.RecoveryShares}, nil
}
