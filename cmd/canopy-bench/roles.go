package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/bench"
	"github.com/canopytree/canopy/root"
	"github.com/canopytree/canopy/root/remote"
)

// The roles of a live run, each in a process of its own so that CPU and
// memory are measured per role: canopy-bench runs itself as
// "canopy-bench role root|supernodes|leaves". A role prints one JSON line
// on stdout when it is ready and runs until SIGTERM.

// ready is a role's announcement.
type ready struct {
	GRPC    string   `json:"grpc,omitempty"`    // root
	HTTP    string   `json:"http,omitempty"`    // root: /metrics; leaves: /stats and (direct) /metrics
	Parents []string `json:"parents,omitempty"` // supernodes: where leaves attach
}

// leafStats is what a leaves process reports on /stats.
type leafStats struct {
	Produced int64 `json:"produced"` // samples the synthetic collectors produced
	Sealed   int64 `json:"sealed"`   // samples sealed into batches (after the filter)
}

func role(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("role: root, supernodes or leaves")
	}
	flags := pflag.NewFlagSet("role", pflag.ContinueOnError)
	window := flags.Duration("window", 5*time.Second, "batch window at every level")
	scrape := flags.Duration("scrape-interval", 2*time.Second, "scrape interval of the emulated nodes")
	series := flags.Int("series", 100, "series per emulated leaf")
	dataDir := flags.String("data-dir", "", "root: TSDB directory")
	parents := flags.StringSlice("parents", nil, "supernodes: the root; leaves: their parents")
	counts := flags.IntSlice("supernodes", nil, "supernodes per level, top down")
	fanOut := flags.Int("fanout", 100, "supernodes: children per supernode")
	first := flags.Int("first", 0, "leaves: index of the first leaf")
	count := flags.Int("count", 0, "leaves: how many")
	dcs := flags.Int("dcs", 10, "dcs the emulated nodes spread over")
	direct := flags.String("direct", "", "leaves: remote-write every sample to this URL instead of joining a tree")
	logLevel := flags.String("log-level", "warn", "debug, info, warn or error")
	remoteWrite := flags.String("remote-write", "", "root: remote-write everything stored to this URL")
	if err := flags.Parse(args[1:]); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	emu := bench.EmulationConfig{Window: *window, ScrapeInterval: *scrape, Workload: bench.DefaultWorkload(*series), DCs: *dcs, MaxMessageBytes: 256 << 20}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	announce := func(r ready) error { return json.NewEncoder(out).Encode(r) }

	switch args[0] {
	case "root":
		return runRootRole(ctx, *dataDir, *window, *remoteWrite, log, announce)
	case "supernodes":
		if len(*parents) != 1 || len(*counts) == 0 {
			return errors.New("role supernodes: --parents ROOT --supernodes N[,N…]")
		}
		level := []string{(*parents)[0]}
		var all []*bench.Emulated
		defer func() {
			for _, e := range all {
				e.Stop()
			}
		}()
		for i, n := range *counts {
			ps := make([]string, n)
			for j := range ps {
				ps[j] = level[j%len(level)]
			}
			// A supernode takes its share of the level below, plus room.
			below := *fanOut * 2
			e, addrs, err := bench.StartSupernodes(emu, i+1, ps, below, log)
			if err != nil {
				return err
			}
			all = append(all, e)
			level = addrs
		}
		if err := announce(ready{Parents: level}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	case "leaves":
		if (len(*parents) == 0) == (*direct == "") || *count <= 0 {
			return errors.New("role leaves: --parents ADDR[,ADDR…] or --direct URL, and --count N")
		}
		reg := prometheus.NewRegistry()
		var stats func() leafStats
		if *direct != "" {
			d, err := bench.StartDirect(emu, *first, *count, *direct, reg)
			if err != nil {
				return err
			}
			defer d.Stop()
			stats = func() leafStats { return leafStats{Produced: d.Produced.Load(), Sealed: d.Produced.Load()} }
		} else {
			e, err := bench.StartLeaves(emu, *first, *count, *parents, log)
			if err != nil {
				return err
			}
			defer e.Stop()
			stats = func() leafStats { return leafStats{Produced: e.Produced.Load(), Sealed: e.Sealed.Load()} }
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(stats()) })
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile) // where a large run spends its CPU
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: mux}
		go func() { _ = srv.Serve(lis) }()
		defer srv.Close()
		if err := announce(ready{HTTP: lis.Addr().String()}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}
	return fmt.Errorf("unknown role %q", args[0])
}

// runRootRole runs a root with limits sized for a whole emulated tree in
// one heartbeat: its children are few, their messages large.
func runRootRole(ctx context.Context, dataDir string, window time.Duration, remoteWrite string, log *slog.Logger, announce func(ready) error) error {
	if dataDir == "" {
		return errors.New("role root: --data-dir")
	}
	g, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	h, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var endpoints []remote.Endpoint
	if remoteWrite != "" {
		endpoints = []remote.Endpoint{{Name: "sink", Queue: remote.DefaultQueueConfig(),
			Client: remote.ClientConfig{URL: remoteWrite, Timeout: 30 * time.Second}}}
	}
	r, err := root.Open(root.Options{
		Remote: endpoints, RemoteLog: remote.LogConfig{MaxBytes: 1 << 30, MaxAge: time.Hour, SegmentBytes: 64 << 20},
		ID: "root", Address: g.Addr().String(), DataDir: dataDir,
		Retention: 2 * time.Hour, OutOfOrderWindow: time.Hour, Window: window,
		MaxMessageBytes: 256 << 20, ForgetAfter: max(time.Minute, 10*window),
		Limits: batch.DecodeLimits{MaxSeries: 50_000_000, MaxSamples: 200_000_000, MaxLabelsPerSet: 64,
			MaxLabelNameLen: 128, MaxLabelValueLen: 1024, MaxDictionarySize: 50_000_000},
		Ingest: root.IngestConfig{MaxAge: time.Hour, MaxFuture: time.Minute},
	}, log)
	if err != nil {
		return err
	}
	defer r.Close()
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, g, h) }()
	if err := announce(ready{GRPC: g.Addr().String(), HTTP: h.Addr().String()}); err != nil {
		return err
	}
	return <-done
}

// procCPUSeconds is the CPU time (user + system) a process has used.
func procCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start at ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	var utime, stime float64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

// procRSSBytes is a process's resident memory.
func procRSSBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}
