package tree

import (
	"math"
	"time"
)

// Capacity is what a device brings. Cores, memory and bandwidth are read
// from the machine or configured; Boot is when the device came up, so
// uptime grows while the process runs.
type Capacity struct {
	Cores            int
	MemoryBytes      uint64
	LinkBandwidthBps uint64
	Boot             time.Time
}

// Uptime of the device at now.
func (c Capacity) Uptime(now time.Time) time.Duration {
	if c.Boot.IsZero() || now.Before(c.Boot) {
		return 0
	}
	return now.Sub(c.Boot)
}

// Score ranks candidates for promotion: more cores, memory, bandwidth and a
// longer uptime all help, each with diminishing weight past what a small
// supernode needs. Every node computes it with the same formula, so the
// parent's ranking of its children is consistent.
func (c Capacity) Score(now time.Time) float64 {
	const gib = 1 << 30
	cores := math.Min(float64(c.Cores), 16)
	mem := math.Min(float64(c.MemoryBytes)/gib, 32) / 2
	bw := math.Min(float64(c.LinkBandwidthBps)/100e6, 10)
	up := 4 * math.Min(c.Uptime(now).Hours()/24, 1)
	return round2(cores + mem + bw + up)
}

// ChildLimit is how many children a supernode with this capacity adopts:
// ten per unit of its static score (cores, memory, bandwidth; uptime does
// not make a link faster), between 4 and 1000.
func (c Capacity) ChildLimit() int {
	static := Capacity{Cores: c.Cores, MemoryBytes: c.MemoryBytes, LinkBandwidthBps: c.LinkBandwidthBps}
	return int(math.Max(4, math.Min(1000, math.Round(10*static.Score(time.Time{})))))
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
