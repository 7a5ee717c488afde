package tree

import (
	"testing"
	"time"
)

func TestScoreAndLimit(t *testing.T) {
	boot := time.Unix(1_700_000_000, 0)
	day := boot.Add(24 * time.Hour)
	cases := []struct {
		name  string
		c     Capacity
		at    time.Time
		score float64
		limit int
	}{
		{"tiny sensor, just booted", Capacity{Cores: 1, MemoryBytes: 256 << 20, LinkBandwidthBps: 10e6, Boot: boot}, boot, 1.23, 12},
		{"gateway, a day up", Capacity{Cores: 4, MemoryBytes: 4 << 30, LinkBandwidthBps: 100e6, Boot: boot}, day, 11, 70},
		{"half a day counts half", Capacity{Cores: 4, MemoryBytes: 4 << 30, LinkBandwidthBps: 100e6, Boot: boot}, boot.Add(12 * time.Hour), 9, 70},
		{"server, capped", Capacity{Cores: 64, MemoryBytes: 256 << 30, LinkBandwidthBps: 10e9, Boot: boot}, day.Add(1000 * time.Hour), 46, 420},
		{"unknown", Capacity{}, day, 0, 4},
	}
	for _, tc := range cases {
		if got := tc.c.Score(tc.at); got != tc.score {
			t.Errorf("%s: score %v, want %v", tc.name, got, tc.score)
		}
		if got := tc.c.ChildLimit(); got != tc.limit {
			t.Errorf("%s: limit %d, want %d", tc.name, got, tc.limit)
		}
	}
}
