package node

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/filter"
	"github.com/canopytree/canopy/internal/config"
	"github.com/canopytree/canopy/internal/tlsconfig"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/tree"
)

// Config is the canopy-node configuration file. Every field's default is in
// Default; examples/node.yaml shows them all.
type Config struct {
	Node    Identity      `mapstructure:"node"`
	Tree    Tree          `mapstructure:"tree"`
	Scrape  Scrape        `mapstructure:"scrape"`
	Filter  Filter        `mapstructure:"filter"`
	Batch   Batch         `mapstructure:"batch"`
	Limits  config.Limits `mapstructure:"limits"`
	Forward Forward       `mapstructure:"forward"`
	// TLS secures the tree's links: any key turns it on for the node's
	// connections to parents (ca_file verifies them; cert_file and
	// key_file are presented for mutual TLS) and for its tree listener
	// (cert_file and key_file; client_ca_file requires children's
	// certificates). A tree uses TLS on every link or on none.
	TLS tlsconfig.Config `mapstructure:"tls"`
	Log config.Log       `mapstructure:"log"`
}

// Identity is who the node is and where it sits.
type Identity struct {
	// ID names the node in the tree and in its series' node label.
	// Default: the host name.
	ID string `mapstructure:"id"`
	// DC is the distributed cloud the node belongs to (the dc label).
	DC string `mapstructure:"dc"`
	// Role is auto (a leaf the tree may promote), leaf-only (never
	// promoted) or supernode (always one).
	Role string `mapstructure:"role"`
	// Roots are the root's gRPC addresses, asked for candidates.
	Roots []string `mapstructure:"roots"`
	// Static joins the first root address and nothing else: a fixed
	// topology (that address may be a supernode's).
	Static bool `mapstructure:"static"`
	// Listen is the local HTTP API: targets, /metrics, /healthz.
	Listen string `mapstructure:"listen"`
	// TreeListen is where the node serves TreeService, so it can be a
	// parent when promoted. Empty makes the node leaf-only.
	TreeListen string `mapstructure:"tree_listen"`
	// Advertise is the address children dial (default: tree_listen).
	Advertise string `mapstructure:"advertise"`
	// StateDir keeps the node's role across restarts (state.json).
	StateDir string `mapstructure:"state_dir"`
}

// Tree tunes the self-organising tree (see the tree package).
type Tree struct {
	// ChildLimit overrides the limit derived from capacity (0: derive).
	ChildLimit int `mapstructure:"child_limit"`
	// LinkBandwidthMbps is the uplink bandwidth, part of the capacity score.
	LinkBandwidthMbps int `mapstructure:"link_bandwidth_mbps"`
	// MissedWindows and DeadWindows: a silent child is suspect, then dead;
	// a child gives up on a silent parent after dead_windows too.
	MissedWindows int `mapstructure:"missed_windows"`
	DeadWindows   int `mapstructure:"dead_windows"`
	// ForgetAfter is the soft-state timeout.
	ForgetAfter time.Duration `mapstructure:"forget_after"`
	// Probes per candidate (median RTT), and the timeout of each request.
	Probes         int           `mapstructure:"probes"`
	RequestTimeout time.Duration `mapstructure:"request_timeout"`
	MaxCandidates  int           `mapstructure:"max_candidates"`
	// PromoteMinUptime and PromoteMinCapacity make a node eligible.
	PromoteMinUptime   time.Duration `mapstructure:"promote_min_uptime"`
	PromoteMinCapacity float64       `mapstructure:"promote_min_capacity"`
	// DemoteAfter: an idle supernode becomes a leaf again.
	DemoteAfter time.Duration `mapstructure:"demote_after"`
	// ShedFraction of its leaves a parent moves to a newly promoted child.
	ShedFraction float64 `mapstructure:"shed_fraction"`
	// BackoffInitial and BackoffMax bound retries.
	BackoffInitial time.Duration `mapstructure:"backoff_initial"`
	BackoffMax     time.Duration `mapstructure:"backoff_max"`
}

// Scrape configures collection.
type Scrape struct {
	// Interval between scrapes of each target.
	Interval time.Duration `mapstructure:"interval"`
	// Timeout of one scrape; at most Interval.
	Timeout time.Duration `mapstructure:"timeout"`
	// Machine enables the built-in /proc collector.
	Machine  bool   `mapstructure:"machine"`
	ProcPath string `mapstructure:"proc_path"`
	SysPath  string `mapstructure:"sys_path"`
	// Targets are scraped from start; more can be added at run time
	// through the local API.
	Targets []leaf.Target `mapstructure:"targets"`
}

// Filter configures arithmetic filtering: by default only unchanged
// values are held back; rules add dead-bands.
type Filter struct {
	// KeyframeWindows sends every value once every this many windows, so
	// parents' caches heal (0: never).
	KeyframeWindows int `mapstructure:"keyframe_windows"`
	// StaleAfterWindows: a series absent this many windows gets a
	// staleness marker.
	StaleAfterWindows int                 `mapstructure:"stale_after_windows"`
	Rules             []config.FilterRule `mapstructure:"rules"`
}

// filterConfig converts the section; errors name the key.
func (f Filter) filterConfig() (filter.Config, error) {
	cfg := filter.Config{KeyframeWindows: f.KeyframeWindows, StaleAfterWindows: f.StaleAfterWindows}
	for i, r := range f.Rules {
		key := fmt.Sprintf("filter.rules[%d]", i)
		p, err := r.Proto(key)
		if err != nil {
			return cfg, err
		}
		rule, err := filter.RuleFromProto(p)
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", key, err)
		}
		cfg.Rules = append(cfg.Rules, rule)
	}
	return cfg, nil
}

// Batch configures temporal batching and delivery.
type Batch struct {
	// Window is the heartbeat period: one batch per window.
	Window time.Duration `mapstructure:"window"`
	// Delivery is at-least-once (keep until the root acknowledges) or
	// at-most-once (forget once the parent took it).
	Delivery string `mapstructure:"delivery"`
	// MaxSamples and MaxBytes bound the retention buffer; past them the
	// oldest batches are dropped and counted.
	MaxSamples int `mapstructure:"max_samples"`
	MaxBytes   int `mapstructure:"max_bytes"`
	// RetransmitAfter resends a batch not acknowledged in this time.
	RetransmitAfter time.Duration `mapstructure:"retransmit_after"`
	// MaxBatchesPerHeartbeat bounds one message while catching up.
	MaxBatchesPerHeartbeat int `mapstructure:"max_batches_per_heartbeat"`
	// MaxDictionary bounds the series dictionary before a new session.
	MaxDictionary int `mapstructure:"max_dictionary"`
	// DrainTimeout bounds how long a stopping node keeps sending
	// heartbeats so that what it holds (its own unacknowledged batches and,
	// on a supernode, its children's queued batches) reaches the root.
	DrainTimeout time.Duration `mapstructure:"drain_timeout"`
}

// Forward bounds a supernode's queue of children's batches, and how many
// of their samples one upward heartbeat carries: the children's batches
// of a window go up merged in one message when they fit.
type Forward struct {
	MaxSamples        int `mapstructure:"max_samples"`
	MaxBytes          int `mapstructure:"max_bytes"`
	MaxMessageSamples int `mapstructure:"max_message_samples"`
}

// Default is the configuration a node runs with when nothing is set.
func Default() Config {
	host, _ := os.Hostname()
	td := tree.DefaultConfig(host) // the protocol's defaults live there
	fd := filter.DefaultConfig()
	return Config{
		Node: Identity{
			ID:     host,
			DC:     "default",
			Role:   "auto",
			Roots:  []string{"127.0.0.1:7070"},
			Listen: "127.0.0.1:9180",
		},
		Tree: Tree{
			LinkBandwidthMbps:  100,
			MissedWindows:      td.MissedWindows,
			DeadWindows:        td.DeadWindows,
			ForgetAfter:        td.ForgetAfter,
			Probes:             td.Probes,
			RequestTimeout:     td.RequestTimeout,
			MaxCandidates:      td.MaxCandidates,
			PromoteMinUptime:   td.MinUptime,
			PromoteMinCapacity: td.MinCapacity,
			DemoteAfter:        td.DemoteAfter,
			ShedFraction:       td.ShedFraction,
			BackoffInitial:     td.BackoffInitial,
			BackoffMax:         td.BackoffMax,
		},
		Scrape: Scrape{
			Interval: 2 * time.Second, // cantal's precision: a scan every 2 s
			Timeout:  2 * time.Second,
			Machine:  true,
			ProcPath: "/proc",
			SysPath:  "/sys",
		},
		Batch: Batch{
			Window:                 5 * time.Second,
			Delivery:               "at-least-once",
			MaxSamples:             500_000, // ≈ 5 min of a node_exporter-sized node
			MaxBytes:               64 << 20,
			RetransmitAfter:        time.Minute,
			MaxBatchesPerHeartbeat: 16,
			MaxDictionary:          1_000_000,
			DrainTimeout:           15 * time.Second, // three windows: an ack crosses a few levels
		},
		Filter:  Filter{KeyframeWindows: fd.KeyframeWindows, StaleAfterWindows: fd.StaleAfterWindows},
		Limits:  config.DefaultLimits(),
		Forward: Forward{MaxSamples: 5_000_000, MaxBytes: 512 << 20, MaxMessageSamples: 1_000_000}, // half a parent's limits.max_samples
		Log:     config.DefaultLog(),
	}
}

// Validate names the first bad key.
func (c *Config) Validate() error {
	switch {
	case c.Node.ID == "":
		return fmt.Errorf("node.id: must not be empty")
	case c.Node.DC == "":
		return fmt.Errorf("node.dc: must not be empty")
	case c.Node.Role != "auto" && c.Node.Role != "leaf-only" && c.Node.Role != "supernode":
		return fmt.Errorf("node.role: %q is not auto, leaf-only or supernode", c.Node.Role)
	case len(c.Node.Roots) == 0:
		return fmt.Errorf("node.roots: must name the root's gRPC address")
	case c.Node.Role == "supernode" && c.Node.TreeListen == "":
		return fmt.Errorf("node.tree_listen: a supernode must listen for children")
	case c.TLS.ClientEnabled() && c.Node.TreeListen != "" && !c.TLS.ServerEnabled():
		return fmt.Errorf("tls.cert_file: with tls on, a node that may serve children (node.tree_listen) needs a certificate")
	case c.TLS.ClientEnabled():
		if _, err := c.TLS.Client(); err != nil {
			return fmt.Errorf("tls.%w", err)
		}
		if c.TLS.ServerEnabled() {
			if _, err := c.TLS.Server(); err != nil {
				return fmt.Errorf("tls.%w", err)
			}
		}
	case c.Tree.ChildLimit < 0:
		return fmt.Errorf("tree.child_limit: must not be negative")
	case c.Tree.LinkBandwidthMbps < 0:
		return fmt.Errorf("tree.link_bandwidth_mbps: must not be negative")
	case c.Scrape.Interval <= 0:
		return fmt.Errorf("scrape.interval: must be positive")
	case c.Scrape.Timeout <= 0 || c.Scrape.Timeout > c.Scrape.Interval:
		return fmt.Errorf("scrape.timeout: must be positive and at most scrape.interval (%s)", c.Scrape.Interval)
	case c.Batch.Window <= 0:
		return fmt.Errorf("batch.window: must be positive")
	case c.Batch.Delivery != "at-least-once" && c.Batch.Delivery != "at-most-once":
		return fmt.Errorf("batch.delivery: %q is not at-least-once or at-most-once", c.Batch.Delivery)
	case c.Batch.MaxSamples <= 0 || c.Batch.MaxBytes <= 0:
		return fmt.Errorf("batch.max_samples, batch.max_bytes: must be positive")
	case c.Batch.RetransmitAfter < c.Batch.Window:
		return fmt.Errorf("batch.retransmit_after: must be at least batch.window (%s)", c.Batch.Window)
	case c.Batch.MaxBatchesPerHeartbeat <= 0:
		return fmt.Errorf("batch.max_batches_per_heartbeat: must be positive")
	case c.Batch.MaxDictionary <= 0:
		return fmt.Errorf("batch.max_dictionary: must be positive")
	case c.Batch.DrainTimeout < 0:
		return fmt.Errorf("batch.drain_timeout: must not be negative")
	case c.Forward.MaxSamples <= 0 || c.Forward.MaxBytes <= 0 || c.Forward.MaxMessageSamples <= 0:
		return fmt.Errorf("forward.max_samples, forward.max_bytes, forward.max_message_samples: must be positive")
	}
	addrs := []struct{ key, v string }{{"node.listen", c.Node.Listen}, {"node.tree_listen", c.Node.TreeListen}, {"node.advertise", c.Node.Advertise}}
	for i, r := range c.Node.Roots {
		addrs = append(addrs, struct{ key, v string }{fmt.Sprintf("node.roots[%d]", i), r})
	}
	for _, addr := range addrs {
		if addr.v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr.v); err != nil {
			return fmt.Errorf("%s: %q is not host:port", addr.key, addr.v)
		}
	}
	for i := range c.Scrape.Targets {
		if err := c.Scrape.Targets[i].Validate(); err != nil {
			return fmt.Errorf("scrape.targets[%d].%w", i, err)
		}
	}
	if err := c.Limits.Validate("limits"); err != nil {
		return err
	}
	switch {
	case c.Filter.KeyframeWindows < 0:
		return fmt.Errorf("filter.keyframe_windows: must not be negative")
	case c.Filter.StaleAfterWindows < 0:
		return fmt.Errorf("filter.stale_after_windows: must not be negative")
	}
	if _, err := c.Filter.filterConfig(); err != nil {
		return err
	}
	tc := c.treeConfig(tree.Capacity{})
	if err := tc.Validate(); err != nil {
		return fmt.Errorf("tree.%w", err)
	}
	_, err := c.Log.Logger()
	return err
}

// treeConfig is the membership configuration for a node of capacity c.
func (c *Config) treeConfig(capacity tree.Capacity) tree.Config {
	tc := tree.DefaultConfig(c.Node.ID)
	tc.Address = c.Node.Advertise
	if tc.Address == "" {
		tc.Address = c.Node.TreeListen
	}
	tc.DC, tc.Roots, tc.Static = c.Node.DC, c.Node.Roots, c.Node.Static
	tc.Capacity, tc.ChildLimit = capacity, c.Tree.ChildLimit
	tc.LeafOnly = c.Node.Role == "leaf-only" || c.Node.TreeListen == ""
	if c.Node.Role == "supernode" {
		tc.Role, tc.Pinned = canopyv1.Role_ROLE_SUPERNODE, true
	}
	tc.Window = c.Batch.Window
	tc.MissedWindows, tc.DeadWindows, tc.ForgetAfter = c.Tree.MissedWindows, c.Tree.DeadWindows, c.Tree.ForgetAfter
	tc.Probes, tc.RequestTimeout, tc.MaxCandidates = c.Tree.Probes, c.Tree.RequestTimeout, c.Tree.MaxCandidates
	tc.MinUptime, tc.MinCapacity = c.Tree.PromoteMinUptime, c.Tree.PromoteMinCapacity
	tc.DemoteAfter, tc.ShedFraction = c.Tree.DemoteAfter, c.Tree.ShedFraction
	tc.BackoffInitial, tc.BackoffMax = c.Tree.BackoffInitial, c.Tree.BackoffMax
	return tc
}

func (c *Config) delivery() batch.Delivery {
	if c.Batch.Delivery == "at-most-once" {
		return batch.AtMostOnce
	}
	return batch.AtLeastOnce
}
