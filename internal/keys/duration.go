package keys

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// maxDays is the largest number of days a time.Duration holds (about 292
// years).
const maxDays = int(math.MaxInt64 / int64(24*time.Hour))

// ParsePeriod parses a rotation period: a Go duration ("720h", "30m") or a
// whole number of days ("90d").
func ParsePeriod(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("%w: rotation period %q: want a positive number of days like 90d, or a duration like 12h", ErrInvalidArgument, s)
		}
		if n > maxDays {
			// time.Duration would overflow and wrap around.
			return 0, fmt.Errorf("%w: rotation period %q is too long; at most %dd", ErrInvalidArgument, s, maxDays)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: rotation period %q: want a positive duration like 90d, 12h or 30m", ErrInvalidArgument, s)
	}
	return d, nil
}

// FormatPeriod is the inverse of ParsePeriod, preferring days.
func FormatPeriod(d time.Duration) string {
	if d == 0 {
		return ""
	}
	switch {
	case d%(24*time.Hour) == 0:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return d.String()
}
