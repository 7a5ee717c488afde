package tree

import (
	"fmt"
	"math/rand/v2"
	"time"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Config configures one node's membership.
type Config struct {
	ID      string
	Address string // where the node serves TreeService; empty: cannot be a parent
	DC      string
	// Roots are bootstrap addresses asked for candidates.
	Roots []string
	// Static joins Roots[0] directly and never looks elsewhere: a fixed
	// topology from configuration.
	Static bool
	// IsRoot marks the top of the tree: it never joins anything.
	IsRoot bool

	Capacity Capacity
	// ChildLimit overrides Capacity.ChildLimit when positive.
	ChildLimit int
	// LeafOnly devices are never promoted.
	LeafOnly bool
	// Role to start in (a promotion survives restarts through the state
	// file); Pinned keeps it: the node is never demoted.
	Role   canopyv1.Role
	Pinned bool

	Window        time.Duration
	MissedWindows int // a silent child is suspect after this many windows
	DeadWindows   int // … dead after this many; a child gives up on its parent too
	// ForgetAfter drops a dead child (soft state) and un-excludes a parent
	// that failed.
	ForgetAfter time.Duration
	// Probes is how many pings each candidate gets; the median RTT counts.
	Probes int
	// RequestTimeout bounds each probe, join and candidates request.
	RequestTimeout time.Duration
	// MaxCandidates bounds candidate lists and redirects.
	MaxCandidates int
	// MinUptime and MinCapacity make a node eligible for promotion.
	MinUptime   time.Duration
	MinCapacity float64
	// DemoteAfter demotes a supernode without children for this long.
	DemoteAfter time.Duration
	// ShedFraction of its leaf children a full parent sends off to re-run
	// selection once it has promoted a new supernode (0 disables).
	ShedFraction float64
	// BackoffInitial and BackoffMax bound the exponential backoff of
	// retries (failed heartbeats, joins that found no room).
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// Jitter randomises backoff by ±this fraction.
	Jitter float64
	// ReportLeavesUpTo: a supernode reports every node of its subtree
	// upward while the subtree has at most this many nodes, otherwise only
	// the supernodes (leaves are counted, not listed).
	ReportLeavesUpTo int
	// Rand drives jitter and tie-breaking; seeded for simulations.
	Rand *rand.Rand
}

// DefaultConfig is a node with a 5 s window, as canopy-node runs by default.
func DefaultConfig(id string) Config {
	return Config{
		ID:               id,
		DC:               "default",
		Role:             canopyv1.Role_ROLE_LEAF,
		Window:           5 * time.Second,
		MissedWindows:    2,
		DeadWindows:      3,
		ForgetAfter:      10 * time.Minute,
		Probes:           3,
		RequestTimeout:   2 * time.Second,
		MaxCandidates:    16,
		MinUptime:        10 * time.Minute,
		MinCapacity:      2,
		DemoteAfter:      30 * time.Minute,
		ShedFraction:     0.5,
		BackoffInitial:   time.Second,
		BackoffMax:       30 * time.Second,
		Jitter:           0.2,
		ReportLeavesUpTo: 1000,
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("id: must not be empty")
	case !c.IsRoot && len(c.Roots) == 0:
		return fmt.Errorf("roots: a node needs at least one bootstrap address")
	case c.Window <= 0:
		return fmt.Errorf("window: must be positive")
	case c.MissedWindows < 1:
		return fmt.Errorf("missed_windows: must be at least 1")
	case c.DeadWindows <= c.MissedWindows:
		return fmt.Errorf("dead_windows: must exceed missed_windows")
	case c.ForgetAfter < time.Duration(c.DeadWindows)*c.Window:
		return fmt.Errorf("forget_after: must be at least dead_windows × window")
	case c.Probes < 1:
		return fmt.Errorf("probes: must be at least 1")
	case c.RequestTimeout <= 0:
		return fmt.Errorf("request_timeout: must be positive")
	case c.MaxCandidates < 1:
		return fmt.Errorf("max_candidates: must be at least 1")
	case c.ShedFraction < 0 || c.ShedFraction > 1:
		return fmt.Errorf("shed_fraction: must be within [0, 1]")
	case c.BackoffInitial <= 0 || c.BackoffMax < c.BackoffInitial:
		return fmt.Errorf("backoff: need 0 < initial ≤ max")
	case c.Jitter < 0 || c.Jitter >= 1:
		return fmt.Errorf("jitter: must be within [0, 1)")
	}
	return nil
}

func (c *Config) childLimit() int {
	if c.ChildLimit > 0 {
		return c.ChildLimit
	}
	return c.Capacity.ChildLimit()
}
