package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/canopytree/canopy/bench"
)

// project prints the analytic model's tables (and writes its graphs).
func project(args []string, out io.Writer) error {
	flags := pflag.NewFlagSet("project", pflag.ContinueOnError)
	nodes := flags.Int("nodes", 100_000, "nodes monitored")
	fanOut := flags.Int("fanout", 100, "children per supernode (derives the supernodes per level)")
	depths := flags.Int("depths", 3, "hierarchy depths to tabulate: 1 (centralised) up to this")
	windows := flags.DurationSlice("windows", bench.PaperWindows, "batch windows (columns); 0 = every update sent")
	updates := flags.Float64("updates-per-second", 1, "a sender's update rate without batching")
	capacity := flags.Float64("sink-capacity", 500, "requests/s one sink server handles")
	series := flags.Int("series", 507, "series per node (samples/s and bytes/s)")
	scrape := flags.Duration("scrape-interval", 2*time.Second, "scrape interval (samples/s and bytes/s)")
	ratio := flags.Float64("filter-ratio", 0.24, "fraction of scraped samples the filter sends (measured on node_exporter: 0.24)")
	perSample := flags.Float64("bytes-per-sample", 9.6, "wire bytes per sent sample (measured: 9.6)")
	plots := flags.String("plots", "", "write the paper's three graphs as SVG into this directory")
	plotWindow := flags.Duration("plot-window", 5*time.Second, "batch window of the nodes-axis graphs")
	asJSON := flags.Bool("json", false, "print the projections as JSON")
	if err := flags.Parse(args); err != nil {
		return err
	}
	switch {
	case *nodes <= 0 || *fanOut < 2 || *depths < 1 || *capacity <= 0 || *updates <= 0:
		return errors.New("--nodes, --sink-capacity and --updates-per-second must be positive, --fanout at least 2, --depths at least 1")
	case *ratio < 0 || *ratio > 1:
		return errors.New("--filter-ratio: between 0 and 1")
	case slices.ContainsFunc(*windows, func(w time.Duration) bool { return w < 0 }):
		return errors.New("--windows: must not be negative")
	}
	base := func(levels int, window time.Duration) bench.Model {
		return bench.Model{
			Nodes: *nodes, Supernodes: bench.SupernodesForFanOut(*nodes, levels, *fanOut), Window: window,
			UpdatesPerSecond: *updates, SinkCapacity: *capacity,
			SeriesPerNode: *series, ScrapeInterval: *scrape, FilterRatio: *ratio, BytesPerSample: *perSample,
		}
	}
	if *plots != "" {
		if err := os.MkdirAll(*plots, 0o755); err != nil {
			return err
		}
		for name, chart := range bench.PaperCharts(base, *depths, *plotWindow) {
			if err := os.WriteFile(filepath.Join(*plots, name), chart.SVG(), 0o644); err != nil {
				return err
			}
		}
	}
	if *asJSON {
		type cell struct {
			Depth  string        `json:"depth"`
			Window time.Duration `json:"window_ns"`
			bench.Projection
		}
		var cells []cell
		for levels := 1; levels <= *depths; levels++ {
			for _, w := range *windows {
				m := base(levels, w)
				cells = append(cells, cell{bench.DepthName(m.Supernodes), w, m.Project()})
			}
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(cells)
	}
	requests, freshness := bench.Tables(base, *depths, *windows)
	fmt.Fprintf(out, "%d nodes, supernodes of %d children, %s updates/s per sender unbatched\n\n%s\n%s\n",
		*nodes, *fanOut, bench.FormatRate(*updates), requests, freshness)
	servers := bench.Table{Title: fmt.Sprintf("Sink servers needed at %s requests/s each", bench.FormatRate(*capacity)), Columns: requests.Columns}
	for levels := 1; levels <= *depths; levels++ {
		row := bench.TableRow{Name: bench.DepthName(base(levels, 0).Supernodes)}
		for _, w := range *windows {
			row.Cells = append(row.Cells, fmt.Sprint(base(levels, w).Project().SinkServers))
		}
		servers.Rows = append(servers.Rows, row)
	}
	fmt.Fprintln(out, servers)
	p := base(1, 0).Project()
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Samples reaching the sink (%d series per node scraped every %s, filter sends %.0f %%, %.1f B each), any depth or window:\n", *series, *scrape, *ratio*100, *perSample)
	fmt.Fprintf(tw, "samples/s\t%s\nbytes/s\t%s\n", bench.FormatRate(p.SamplesPerSecond), bench.FormatRate(p.BytesPerSecond))
	return tw.Flush()
}
