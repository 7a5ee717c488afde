package node

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/internal/config"
	"github.com/canopytree/canopy/leaf"
)

// Config is the canopy-node configuration file. Every field's default is in
// Default; examples/node.yaml shows them all.
type Config struct {
	Node    Identity      `mapstructure:"node"`
	Scrape  Scrape        `mapstructure:"scrape"`
	Batch   Batch         `mapstructure:"batch"`
	Limits  config.Limits `mapstructure:"limits"`
	Forward Forward       `mapstructure:"forward"`
	Log     config.Log    `mapstructure:"log"`
}

// Identity is who the node is and where it sits.
type Identity struct {
	// ID names the node in the tree and in its series' node label.
	// Default: the host name.
	ID string `mapstructure:"id"`
	// DC is the distributed cloud the node belongs to (the dc label).
	DC string `mapstructure:"dc"`
	// Role is leaf or supernode.
	Role string `mapstructure:"role"`
	// Parent is the gRPC address of the parent (a supernode or the root).
	Parent string `mapstructure:"parent"`
	// Listen is the local HTTP API: targets, /metrics, /healthz.
	Listen string `mapstructure:"listen"`
	// TreeListen is where a supernode serves its children (gRPC).
	TreeListen string `mapstructure:"tree_listen"`
	// ChildLimit is how many children a supernode adopts.
	ChildLimit int `mapstructure:"child_limit"`
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
}

// Forward bounds a supernode's queue of children's batches.
type Forward struct {
	MaxSamples int `mapstructure:"max_samples"`
	MaxBytes   int `mapstructure:"max_bytes"`
}

// Default is the configuration a node runs with when nothing is set.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		Node: Identity{
			ID:         host,
			DC:         "default",
			Role:       "leaf",
			Parent:     "127.0.0.1:7070",
			Listen:     "127.0.0.1:9180",
			ChildLimit: 100,
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
		},
		Limits:  config.DefaultLimits(),
		Forward: Forward{MaxSamples: 5_000_000, MaxBytes: 512 << 20},
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
	case c.Node.Role != "leaf" && c.Node.Role != "supernode":
		return fmt.Errorf("node.role: %q is not leaf or supernode", c.Node.Role)
	case c.Node.Parent == "":
		return fmt.Errorf("node.parent: must name the parent's gRPC address")
	case c.Node.Role == "supernode" && c.Node.TreeListen == "":
		return fmt.Errorf("node.tree_listen: a supernode must listen for children")
	case c.Node.ChildLimit <= 0:
		return fmt.Errorf("node.child_limit: must be positive")
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
	case c.Forward.MaxSamples <= 0 || c.Forward.MaxBytes <= 0:
		return fmt.Errorf("forward.max_samples, forward.max_bytes: must be positive")
	}
	for _, addr := range []struct{ key, v string }{{"node.parent", c.Node.Parent}, {"node.listen", c.Node.Listen}, {"node.tree_listen", c.Node.TreeListen}} {
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
	_, err := c.Log.Logger()
	return err
}

func (c *Config) delivery() batch.Delivery {
	if c.Batch.Delivery == "at-most-once" {
		return batch.AtMostOnce
	}
	return batch.AtLeastOnce
}
