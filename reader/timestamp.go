package reader

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// msThreshold separates Unix seconds from Unix milliseconds: 1e11 seconds
// is the year 5138, 1e11 milliseconds is March 1973.
const msThreshold = 1e11

// ParseTimestamp accepts Unix seconds (integer or fractional), Unix
// milliseconds, RFC 3339, or "now", and returns milliseconds.
func ParseTimestamp(s string, now time.Time) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty timestamp")
	}
	if s == "now" {
		return now.UnixMilli(), nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return 0, fmt.Errorf("timestamp %q: must be a non-negative Unix time", s)
		}
		if f >= msThreshold {
			if f > math.MaxInt64/2 {
				return 0, fmt.Errorf("timestamp %q: out of range", s)
			}
			return int64(f), nil
		}
		return int64(math.Round(f * 1000)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("timestamp %q: not Unix seconds, Unix milliseconds or RFC 3339", s)
	}
	return t.UnixMilli(), nil
}
