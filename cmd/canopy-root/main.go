// Command canopy-root is the top of the tree: it accepts heartbeats,
// persists them in the embedded Prometheus TSDB and serves the reader over
// gRPC and REST.
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
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/root"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "canopy-root:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := pflag.NewFlagSet("canopy-root", pflag.ContinueOnError)
	file := flags.StringP("config", "c", "", "YAML configuration file (see examples/root.yaml)")
	flags.String("grpc-listen", "", "gRPC address for children and readers (root.grpc_listen)")
	flags.String("http-listen", "", "HTTP address for the REST gateway and /metrics (root.http_listen)")
	flags.String("data-dir", "", "TSDB directory (storage.data_dir)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	cfg := Default()
	err := config.Load(&cfg, *file, flags, map[string]string{
		"grpc-listen": "root.grpc_listen", "http-listen": "root.http_listen", "data-dir": "storage.data_dir",
	})
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, _ := cfg.Log.Logger()
	grpcLis, err := net.Listen("tcp", cfg.Root.GRPCListen)
	if err != nil {
		return fmt.Errorf("root.grpc_listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", cfg.Root.HTTPListen)
	if err != nil {
		return fmt.Errorf("root.http_listen: %w", err)
	}
	opts := cfg.Options()
	opts.Address = grpcLis.Addr().String()
	if cfg.Root.Advertise != "" {
		opts.Address = cfg.Root.Advertise
	}
	r, err := root.Open(opts, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go reloadOnHangup(ctx, r, func() (*canopyv1.Control, error) {
		next := Default()
		if err := config.Load(&next, *file, flags, nil); err != nil {
			return nil, err
		}
		if err := next.Validate(); err != nil {
			return nil, err
		}
		return next.Control()
	})
	log.Info("canopy-root started", "grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(),
		"data_dir", cfg.Storage.DataDir,
		"query", fmt.Sprintf("http://%s/api/metrics-api/nodes/{node}/latest", httpLis.Addr()))
	serveErr := r.Serve(ctx, grpcLis, httpLis)
	if err := r.Close(); err != nil && serveErr == nil {
		serveErr = err
	}
	return serveErr
}

// reloadOnHangup re-reads the filter and aggregation sections on SIGHUP and
// pushes them down the tree; other sections need a restart.
func reloadOnHangup(ctx context.Context, r *root.Root, load func() (*canopyv1.Control, error)) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		c, err := load()
		if err == nil {
			err = r.SetControl(c)
		}
		if err != nil {
			r.Logger().Error("configuration not reloaded", "err", err)
		}
	}
}
