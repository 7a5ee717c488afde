package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/pflag"

	"github.com/canopytree/canopy/bench"
)

// RunResult is what a live run measured, beside the projection.
type RunResult struct {
	Leaves         int           `json:"leaves"`
	Levels         int           `json:"levels"`
	Supernodes     []int         `json:"supernodes"`
	Window         time.Duration `json:"window_ns"`
	ScrapeInterval time.Duration `json:"scrape_interval_ns"`
	Series         int           `json:"series_per_leaf"`
	Seconds        float64       `json:"measured_seconds"`
	// Direct is the centralised baseline: every leaf remote-writes to the
	// sink.
	Direct bool `json:"direct"`

	RequestsPerSecond float64 `json:"requests_per_second"`
	SamplesPerSecond  float64 `json:"samples_per_second"`
	BytesPerSecond    float64 `json:"bytes_per_second"`
	// FilterRatio is the fraction of produced samples the leaves sent.
	FilterRatio float64 `json:"filter_ratio"`
	// Freshness: scrape to storage at the root, seconds.
	FreshnessP50 float64 `json:"freshness_p50_s"`
	FreshnessP99 float64 `json:"freshness_p99_s"`
	FreshnessMax float64 `json:"freshness_max_s"` // upper bound of the highest bucket hit
	// Direct leaves that could not keep up: windows that ended with the
	// previous request still running, and failed requests.
	LateWindowsPerSecond float64 `json:"late_windows_per_second,omitempty"`
	FailedPerSecond      float64 `json:"failed_requests_per_second,omitempty"`
	Roles                []Role  `json:"roles"`

	Projected bench.Projection `json:"projected"`
}

// Role is one process's footprint over the measurement.
type Role struct {
	Name     string  `json:"name"`
	Nodes    int     `json:"nodes"`
	CPUCores float64 `json:"cpu_cores"`
	RSSMax   int64   `json:"rss_max_bytes"`
}

type process struct {
	name  string
	nodes int
	cmd   *exec.Cmd
	ready ready
}

// startRole runs this binary as a role and waits for its announcement.
func startRole(name string, nodes int, args ...string) (*process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, append([]string{"role", name}, args...)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // no orphans if the driver dies
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{name: name, nodes: nodes, cmd: cmd}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &p.ready)
	}
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("role %s did not start: %w", name, err)
	}
	return p, nil
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// snapshot is what the driver reads at the start and end of the
// measurement.
type snapshot struct {
	at                          time.Time
	heartbeats, bytes, appended float64
	late, failed                float64 // direct leaves' late windows and failed requests
	delay                       *dto.Histogram
	leaves                      leafStats
	cpu                         map[string]float64
}

func runLive(args []string, out io.Writer) error {
	flags := pflag.NewFlagSet("run", pflag.ContinueOnError)
	leaves := flags.Int("leaves", 10_000, "emulated leaves")
	levels := flags.Int("levels", 2, "levels of the tree, the leaves' included: 1 (leaves under the root), 2, 3")
	fanOut := flags.Int("fanout", 100, "children per supernode")
	window := flags.Duration("window", 5*time.Second, "batch window at every level")
	scrape := flags.Duration("scrape-interval", 2*time.Second, "scrape interval")
	series := flags.Int("series", 100, "series per leaf")
	warmup := flags.Duration("warmup", 0, "time before measuring (default: the leaves' start ramp + 6 windows)")
	duration := flags.Duration("duration", 0, "measurement time (default: 12 windows)")
	asJSON := flags.Bool("json", false, "print the result as JSON")
	outFile := flags.String("out", "", "also write the JSON result to this file")
	quiet := flags.Bool("quiet", false, "no progress display")
	logLevel := flags.String("log-level", "warn", "the roles' log level")
	direct := flags.String("direct", "", "the centralised baseline: every leaf remote-writes every sample to this URL (no tree)")
	sinkPID := flags.Int("sink-pid", 0, "with --direct: the sink's process, measured as a role")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *leaves <= 0 || *levels < 1 || *levels > 3 || *fanOut < 2 || *window <= 0 || *scrape <= 0 || *series <= 0 {
		return errors.New("run: --leaves, --window, --scrape-interval, --series positive; --levels 1 to 3; --fanout at least 2")
	}
	if *warmup == 0 {
		*warmup = bench.StartSpread(*leaves, *window) + 6**window
	}
	if *duration == 0 {
		*duration = 12 * *window
	}
	if *direct != "" {
		*levels = 1
	}
	supernodes := bench.SupernodesForFanOut(*leaves, *levels, *fanOut)
	dir, err := os.MkdirTemp("", "canopy-bench-run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	common := []string{"--window", window.String(), "--scrape-interval", scrape.String(), "--series", strconv.Itoa(*series), "--log-level", *logLevel}

	var procs []*process
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- { // leaves first
			procs[i].stop()
		}
	}()
	// The sink's figures: the root's heartbeats, or the direct leaves'
	// accepted remote-write requests.
	var sink struct{ url, requests, bytes, samples, delay string }
	var parents []string
	if *direct == "" {
		rootP, err := startRole("root", 1, append(common, "--data-dir", dir)...)
		if err != nil {
			return err
		}
		procs = append(procs, rootP)
		parents = []string{rootP.ready.GRPC}
		sink.url = "http://" + rootP.ready.HTTP + "/metrics"
		sink.requests, sink.bytes = "canopy_parent_heartbeats_total", "canopy_parent_heartbeat_received_bytes_total"
		sink.samples, sink.delay = "canopy_root_samples_appended_total", "canopy_root_sample_delay_seconds"
	}
	if len(supernodes) > 0 {
		counts := make([]string, len(supernodes))
		for i, n := range supernodes {
			counts[i] = strconv.Itoa(n)
		}
		total := 0
		for _, n := range supernodes {
			total += n
		}
		sp, err := startRole("supernodes", total, append(common, "--parents", parents[0], "--supernodes", strings.Join(counts, ","), "--fanout", strconv.Itoa(*fanOut))...)
		if err != nil {
			return err
		}
		procs = append(procs, sp)
		parents = sp.ready.Parents
	}
	leafArgs := append(common, "--count", strconv.Itoa(*leaves))
	if *direct != "" {
		leafArgs = append(leafArgs, "--direct", *direct)
	} else {
		leafArgs = append(leafArgs, "--parents", strings.Join(parents, ","))
	}
	lp, err := startRole("leaves", *leaves, leafArgs...)
	if err != nil {
		return err
	}
	procs = append(procs, lp)
	if *direct != "" {
		sink.url = "http://" + lp.ready.HTTP + "/metrics"
		sink.requests, sink.bytes = "canopy_bench_direct_requests_total", "canopy_bench_direct_sent_bytes_total"
		sink.samples, sink.delay = "canopy_bench_direct_samples_total", "canopy_bench_direct_delay_seconds"
	}
	statsURL := "http://" + lp.ready.HTTP + "/stats"
	// What is measured per role: the processes started, and the sink.
	type watched struct {
		name  string
		nodes int
		pid   int
	}
	var roles []watched
	for _, p := range procs {
		roles = append(roles, watched{p.name, p.nodes, p.cmd.Process.Pid})
	}
	if *direct != "" && *sinkPID > 0 {
		roles = append(roles, watched{"sink", 0, *sinkPID})
	}
	take := func() (snapshot, error) {
		s := snapshot{at: time.Now(), cpu: map[string]float64{}}
		mfs, err := scrapeMetrics(sink.url)
		if err != nil {
			return s, err
		}
		s.heartbeats = counterValue(mfs[sink.requests])
		s.bytes = counterValue(mfs[sink.bytes])
		s.appended = counterValue(mfs[sink.samples])
		if mf := mfs[sink.delay]; mf != nil && len(mf.Metric) > 0 {
			s.delay = mf.Metric[0].GetHistogram()
		}
		if err := getJSON(statsURL, &s.leaves); err != nil {
			return s, err
		}
		for _, p := range roles {
			c, err := procCPUSeconds(p.pid)
			if err != nil {
				return s, err
			}
			s.cpu[p.name] = c
		}
		s.late, s.failed = counterValue(mfs["canopy_bench_direct_late_windows_total"]), counterValue(mfs["canopy_bench_direct_failed_requests_total"])
		return s, nil
	}
	progress := func(phase string, prev, cur snapshot, elapsed, total time.Duration) {
		if *quiet {
			return
		}
		dt := cur.at.Sub(prev.at).Seconds()
		fmt.Fprintf(os.Stderr, "\r%-9s %5.0fs/%-5.0fs  sink: %7.1f req/s  %10.0f samples/s  %8.0f KB/s   ", phase,
			elapsed.Seconds(), total.Seconds(), (cur.heartbeats-prev.heartbeats)/dt, (cur.appended-prev.appended)/dt, (cur.bytes-prev.bytes)/dt/1024)
	}
	watch := func(phase string, d time.Duration, rss map[string]int64) (snapshot, error) {
		start := time.Now()
		prev, err := take()
		if err != nil {
			return prev, err
		}
		first := prev
		for time.Since(start) < d {
			time.Sleep(min(time.Second, d-time.Since(start)))
			cur, err := take()
			if err != nil {
				return cur, err
			}
			for _, p := range roles {
				if r, err := procRSSBytes(p.pid); err == nil && rss != nil {
					rss[p.name] = max(rss[p.name], r)
				}
			}
			progress(phase, prev, cur, time.Since(start), d)
			prev = cur
		}
		return first, nil
	}
	if _, err := watch("warm-up", *warmup, nil); err != nil {
		return err
	}
	rss := map[string]int64{}
	t0, err := watch("measuring", *duration, rss)
	if err != nil {
		return err
	}
	t1, err := take()
	if err != nil {
		return err
	}
	if !*quiet {
		fmt.Fprintln(os.Stderr)
	}

	dt := t1.at.Sub(t0.at).Seconds()
	res := RunResult{
		Leaves: *leaves, Levels: *levels, Supernodes: supernodes, Window: *window, ScrapeInterval: *scrape, Series: *series, Seconds: dt,
		RequestsPerSecond: (t1.heartbeats - t0.heartbeats) / dt,
		SamplesPerSecond:  (t1.appended - t0.appended) / dt,
		BytesPerSecond:    (t1.bytes - t0.bytes) / dt,
	}
	if produced := float64(t1.leaves.Produced - t0.leaves.Produced); produced > 0 {
		res.FilterRatio = float64(t1.leaves.Sealed-t0.leaves.Sealed) / produced
	}
	res.FreshnessP50, res.FreshnessP99, res.FreshnessMax = delayQuantiles(t0.delay, t1.delay)
	res.LateWindowsPerSecond, res.FailedPerSecond = (t1.late-t0.late)/dt, (t1.failed-t0.failed)/dt
	for _, p := range roles {
		res.Roles = append(res.Roles, Role{Name: p.name, Nodes: p.nodes, CPUCores: (t1.cpu[p.name] - t0.cpu[p.name]) / dt, RSSMax: rss[p.name]})
	}
	res.Direct = *direct != ""
	m := bench.Model{
		Nodes: *leaves, Supernodes: supernodes, Window: *window, UpdatesPerSecond: 1,
		SeriesPerNode: *series, ScrapeInterval: *scrape, FilterRatio: res.FilterRatio, BytesPerSample: 9.6, SinkCapacity: 500,
	}
	if res.Direct {
		m.BytesPerSample = 19.1 // remote write 1.0, measured on the node_exporter replay
	}
	res.Projected = m.Project()
	if *outFile != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*outFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printRun(out, res)
	return nil
}

func printRun(out io.Writer, r RunResult) {
	shape := bench.DepthName(r.Supernodes)
	if r.Direct {
		shape = "direct remote write to the sink (centralised baseline)"
	}
	fmt.Fprintf(out, "%d leaves, %s, %s window, %d series per leaf scraped every %s; measured %.0f s\n\n",
		r.Leaves, shape, r.Window, r.Series, r.ScrapeInterval, r.Seconds)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	ratio := func(m, p float64) string {
		if p == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f", m/p)
	}
	fmt.Fprintln(tw, "at the sink\tmeasured\tprojected\tratio\t")
	fmt.Fprintf(tw, "requests/s\t%.2f\t%.2f\t%s\t\n", r.RequestsPerSecond, r.Projected.RequestsPerSecond, ratio(r.RequestsPerSecond, r.Projected.RequestsPerSecond))
	fmt.Fprintf(tw, "samples/s\t%.0f\t%.0f\t%s\t\n", r.SamplesPerSecond, r.Projected.SamplesPerSecond, ratio(r.SamplesPerSecond, r.Projected.SamplesPerSecond))
	fmt.Fprintf(tw, "bytes/s\t%.0f\t%.0f\t%s\t\n", r.BytesPerSecond, r.Projected.BytesPerSecond, ratio(r.BytesPerSecond, r.Projected.BytesPerSecond))
	fmt.Fprintf(tw, "worst-case freshness (s)\t%.2f\t%.2f\t%s\t\n", r.FreshnessMax, r.Projected.Freshness.Seconds(), ratio(r.FreshnessMax, r.Projected.Freshness.Seconds()))
	fmt.Fprintf(tw, "freshness p50 / p99 (s)\t%.2f / %.2f\t\t\t\n", r.FreshnessP50, r.FreshnessP99)
	fmt.Fprintf(tw, "filter ratio\t%.3f\t\t\t\n", r.FilterRatio)
	if r.Direct {
		fmt.Fprintf(tw, "late windows/s, failed requests/s\t%.2f / %.2f\t\t\t\n", r.LateWindowsPerSecond, r.FailedPerSecond)
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "role\tnodes\tCPU (cores)\tRSS max (MB)\t")
	for _, role := range r.Roles {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t\n", role.Name, role.Nodes, role.CPUCores, float64(role.RSSMax)/(1<<20))
	}
	_ = tw.Flush()
}

func scrapeMetrics(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func counterValue(mf *dto.MetricFamily) float64 {
	var sum float64
	if mf != nil {
		for _, m := range mf.Metric {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// delayQuantiles reads p50, p99 and the highest bucket hit from the
// increase of a histogram between two scrapes (linear within a bucket).
func delayQuantiles(before, after *dto.Histogram) (p50, p99, maxBound float64) {
	if after == nil {
		return 0, 0, 0
	}
	type bucket struct{ upper, count float64 }
	var bs []bucket
	for i, b := range after.Bucket {
		c := float64(b.GetCumulativeCount())
		if before != nil && i < len(before.Bucket) {
			c -= float64(before.Bucket[i].GetCumulativeCount())
		}
		bs = append(bs, bucket{b.GetUpperBound(), c})
	}
	total := float64(after.GetSampleCount())
	if before != nil {
		total -= float64(before.GetSampleCount())
	}
	if total <= 0 {
		return 0, 0, 0
	}
	q := func(phi float64) float64 {
		rank, lower, below := phi*total, 0.0, 0.0
		for _, b := range bs {
			if b.count >= rank {
				if b.count == below {
					return b.upper
				}
				return lower + (b.upper-lower)*(rank-below)/(b.count-below)
			}
			lower, below = b.upper, b.count
		}
		return math.Inf(1)
	}
	maxBound = math.Inf(1)
	for _, b := range bs {
		if b.count >= total {
			maxBound = b.upper
			break
		}
	}
	return q(0.5), q(0.99), maxBound
}
