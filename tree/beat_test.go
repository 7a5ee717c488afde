package tree

import (
	"testing"
	"time"
)

// Heartbeats stay a window apart on average when ticks fire late, and a
// node that fell more than a window behind does not send a burst.
func TestNextBeat(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := 5 * time.Second
	if got := nextBeat(t0, t0.Add(240*time.Millisecond), w); !got.Equal(t0.Add(w)) {
		t.Errorf("late tick: next %v, want a window after the last due time", got.Sub(t0))
	}
	if got := nextBeat(t0, t0.Add(12*time.Second), w); !got.Equal(t0.Add(17 * time.Second)) {
		t.Errorf("far behind: next %v, want a window from now", got.Sub(t0))
	}
	if got := nextBeat(time.Time{}, t0, w); !got.Equal(t0.Add(w)) {
		t.Errorf("first beat: %v", got)
	}
}
