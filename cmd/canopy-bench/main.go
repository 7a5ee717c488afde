// Command canopy-bench measures canopy.
//
//	canopy-bench run [--leaves 10000] [--levels 2] [--fanout 100] [--window 5s] [--series 100] [--json] [--out FILE]
//	canopy-bench project [--nodes 100000] [--fanout 100] [--depths 3] [--windows 0,5s,10s,30s] [--plots DIR] [--json] …
//	canopy-bench footprint --node-exporter URL --sink URL [--interval 2s] [--duration 60s] [--json] [--out FILE]
//	canopy-bench remote-write --url URL [--url URL …] [--nodes 100] [--windows 10] [--series 1500] [--json]
//
// run is a live emulation on loopback with the real code: a root, the
// supernodes of the levels asked for (fan-out --fanout) and emulated
// leaves with node_exporter-like synthetic series, each role in a process
// of its own (this binary, "role root|supernodes|leaves"). After a warm-up
// it measures what reaches the root: requests/s, samples/s, bytes/s,
// freshness (scrape to storage), and CPU and memory per role, and prints
// them beside the projection with the ratio.
//
// footprint runs canopy-node, vmagent and Prometheus in agent mode one at
// a time against the same node_exporter and remote-write sink (canopy-node
// through a root that remote-writes) and reports each one's CPU and RSS.
//
// project is the Astral paper's analytic model of the sink's load: with
// its defaults (the paper's parameters) it prints the paper's two tables,
// sink requests/s and worst-case freshness by depth and window, then the
// sink servers needed and the samples and bytes reaching the sink, and
// with --plots writes the paper's three graphs as SVG.
//
// remote-write measures sustained remote write from the root's durable
// log into real sinks (Prometheus's /api/v1/write, VictoriaMetrics'
// /api/v1/write): samples per second and bytes per sample on the wire,
// with Prometheus's default queue settings and shards adapting every
// second.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/canopytree/canopy/bench"
	"github.com/canopytree/canopy/root/remote"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "canopy-bench:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  canopy-bench run [--leaves N] [--levels 1|2|3] [--fanout N] [--window 5s] [--series N] [--json] [--out FILE]
  canopy-bench project [--nodes N] [--fanout N] [--depths N] [--windows 0,5s,…] [--sink-capacity R] [--plots DIR] [--json]
  canopy-bench footprint --node-exporter URL --sink URL [--interval 2s] [--duration 60s] [--json] [--out FILE]
  canopy-bench remote-write --url URL [--url URL …] [--nodes N] [--windows N] [--series N] [--json]`

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "project":
		return project(args[1:], out)
	case "run":
		return runLive(args[1:], out)
	case "role":
		return role(args[1:], out)
	case "footprint":
		return footprint(args[1:], out)
	case "remote-write":
		return remoteWrite(args[1:], out)
	}
	return errors.New(usage)
}

func remoteWrite(args []string, out io.Writer) error {
	flags := pflag.NewFlagSet("remote-write", pflag.ContinueOnError)
	urls := flags.StringArray("url", nil, "remote-write URL (repeat for several sinks, measured one after the other)")
	nodes := flags.Int("nodes", 100, "emulated nodes")
	windows := flags.Int("windows", 10, "5 s windows per node")
	series := flags.Int("series", 1500, "series per node")
	asJSON := flags.Bool("json", false, "print results as JSON")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if len(*urls) == 0 || *nodes <= 0 || *windows <= 0 || *series <= 0 {
		return errors.New(usage)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	type row struct {
		URL              string  `json:"url"`
		Samples          int     `json:"samples"`
		Seconds          float64 `json:"seconds"`
		SamplesPerSecond float64 `json:"samples_per_second"`
		BytesPerSample   float64 `json:"wire_bytes_per_sample"`
		MaxShards        int     `json:"max_shards"`
	}
	var rows []row
	for _, u := range *urls {
		q := remote.DefaultQueueConfig()
		q.ShardUpdateEvery = time.Second
		res, err := bench.RemoteWrite(ctx, bench.RemoteWriteConfig{URL: u, Nodes: *nodes, Windows: *windows, Series: *series, Queue: q})
		if err != nil {
			return fmt.Errorf("%s: %w", u, err)
		}
		rows = append(rows, row{u, res.Samples, res.Seconds, res.SamplesPerSecond(), res.BytesPerSample(), res.MaxShards})
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SINK\tSAMPLES\tSECONDS\tSAMPLES/S\tWIRE B/SAMPLE\tMAX SHARDS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.0f\t%.2f\t%d\n", r.URL, r.Samples, r.Seconds, r.SamplesPerSecond, r.BytesPerSample, r.MaxShards)
	}
	return tw.Flush()
}
