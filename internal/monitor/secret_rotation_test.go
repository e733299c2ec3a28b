package monitor

import (
	"testing"
)

// The rotation metrics come from the state at scrape time, without any
// secret name as a label.
func TestSecretRotationMetrics(t *testing.T) {
	m := NewMetrics(0, func() State {
		return State{SecretRotationsOK: 3, SecretRotationsFailed: 2, SecretRotationsFailing: 1}
	})
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				if l.GetName() != "result" && (mf.GetName() == "coffer_secret_rotations_total" || mf.GetName() == "coffer_secret_rotations_failing") {
					t.Errorf("%s has label %s", mf.GetName(), l.GetName())
				}
				key += "/" + l.GetValue()
			}
			got[key] = mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	for k, want := range map[string]float64{"coffer_secret_rotations_total/ok": 3, "coffer_secret_rotations_total/failed": 2, "coffer_secret_rotations_failing": 1} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}
