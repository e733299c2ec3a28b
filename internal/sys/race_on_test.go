//go:build race

package sys_test

// raceDetector is true when the tests run under the race detector, which
// slows every operation many times: timing figures then measure it.
const raceDetector = true
