// Command canopy-node is the agent that runs on every device: it scrapes
// its targets and the machine, batches a window of samples and sends it as
// the heartbeat to its parent, which it finds itself (RTT and load); when
// the tree promotes it, it also adopts children and forwards their batches
// with its own.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/canopytree/canopy/internal/config"
	"github.com/canopytree/canopy/internal/node"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "canopy-node:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := pflag.NewFlagSet("canopy-node", pflag.ContinueOnError)
	file := flags.StringP("config", "c", "", "YAML configuration file (see examples/node.yaml)")
	flags.String("id", "", "node id (node.id)")
	flags.String("dc", "", "distributed cloud id (node.dc)")
	flags.String("role", "", "auto, leaf-only or supernode (node.role)")
	flags.StringSlice("roots", nil, "root gRPC addresses, comma separated (node.roots)")
	flags.Bool("static", false, "join the first root address and nothing else (node.static)")
	flags.String("listen", "", "local API address (node.listen)")
	flags.String("tree-listen", "", "gRPC address for children (node.tree_listen)")
	flags.String("state-dir", "", "directory keeping the role across restarts (node.state_dir)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	cfg := node.Default()
	err := config.Load(&cfg, *file, flags, map[string]string{
		"id": "node.id", "dc": "node.dc", "role": "node.role", "roots": "node.roots", "static": "node.static",
		"listen": "node.listen", "tree-listen": "node.tree_listen", "state-dir": "node.state_dir",
	})
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, _ := cfg.Log.Logger()

	apiLis, err := net.Listen("tcp", cfg.Node.Listen)
	if err != nil {
		return fmt.Errorf("node.listen: %w", err)
	}
	var treeLis net.Listener
	if cfg.Node.TreeListen != "" {
		if treeLis, err = net.Listen("tcp", cfg.Node.TreeListen); err != nil {
			return fmt.Errorf("node.tree_listen: %w", err)
		}
		if cfg.Node.Advertise == "" {
			cfg.Node.Advertise = treeLis.Addr().String() // resolves a :0 port
		}
	}
	n, err := node.New(cfg, 0, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("canopy-node started", "id", cfg.Node.ID, "dc", cfg.Node.DC, "role", cfg.Node.Role,
		"roots", cfg.Node.Roots, "api", apiLis.Addr().String(), "tree", cfg.Node.TreeListen)
	return n.Run(ctx, apiLis, treeLis)
}
