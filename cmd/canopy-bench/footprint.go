package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
)

// Footprint is one agent's cost of scraping a node_exporter and
// forwarding every scrape to the sink.
type Footprint struct {
	Agent    string  `json:"agent"`
	Version  string  `json:"version"`
	CPUCores float64 `json:"cpu_cores"`
	RSSMax   int64   `json:"rss_max_bytes"`
	RSSEnd   int64   `json:"rss_end_bytes"`
	Seconds  float64 `json:"measured_seconds"`
	// Delivered is how many node_load1 samples of the agent the sink
	// held for the last two minutes (with --query).
	Delivered int `json:"delivered_node_load1_samples,omitempty"`
}

// footprint runs canopy-node, vmagent and Prometheus in agent mode one at
// a time against the same node_exporter and sink, and measures each.
func footprint(args []string, out io.Writer) error {
	flags := pflag.NewFlagSet("footprint", pflag.ContinueOnError)
	target := flags.String("node-exporter", "", "node_exporter metrics URL, e.g. http://127.0.0.1:9100/metrics")
	sink := flags.String("sink", "", "remote-write URL every agent forwards to")
	interval := flags.Duration("interval", 2*time.Second, "scrape interval")
	warmup := flags.Duration("warmup", 20*time.Second, "time before measuring")
	duration := flags.Duration("duration", 60*time.Second, "measurement time per agent")
	self, _ := os.Executable()
	canopyNode := flags.String("canopy-node", filepath.Join(filepath.Dir(self), "canopy-node"), "canopy-node binary")
	vmagent := flags.String("vmagent", "vmagent", "vmagent binary")
	prometheus := flags.String("prometheus", "prometheus", "prometheus binary (run with --enable-feature=agent)")
	asJSON := flags.Bool("json", false, "print the result as JSON")
	outFile := flags.String("out", "", "also write the JSON result to this file")
	query := flags.String("query", "", "the sink's Prometheus query API base URL: check each agent's samples arrived")
	if err := flags.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" || *sink == "" {
		return errors.New("footprint: --node-exporter URL and --sink URL")
	}
	dir, err := os.MkdirTemp("", "canopy-bench-footprint-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// canopy-node's parent: a root that remote-writes to the sink.
	root, err := startRole("root", 1, "--window", "5s", "--data-dir", filepath.Join(dir, "root"), "--remote-write", *sink)
	if err != nil {
		return err
	}
	defer root.stop()

	agents := []struct {
		name     string
		version  []string
		selector string // the agent's node_load1 series at the sink
		start    func() (*exec.Cmd, error)
	}{
		{"canopy-node", nil, `node="footprint"`, func() (*exec.Cmd, error) {
			cfg := filepath.Join(dir, "node.yaml")
			err := os.WriteFile(cfg, fmt.Appendf(nil, `node:
  id: footprint
  dc: bench
  role: leaf-only
  roots: [%s]
  static: true
  listen: 127.0.0.1:0
scrape:
  interval: %s
  timeout: %s
  machine: false
  targets:
    - {name: node_exporter, url: %q}
log:
  level: warn
`, root.ready.GRPC, interval, interval, *target), 0o644)
			if err != nil {
				return nil, err
			}
			return exec.Command(*canopyNode, "--config", cfg), nil
		}},
		{"vmagent", []string{"dpkg-query", "-W", "-f=victoria-metrics ${Version}", "victoria-metrics"}, `agent="vmagent"`, func() (*exec.Cmd, error) {
			cfg := filepath.Join(dir, "vmagent.yml")
			if err := os.WriteFile(cfg, scrapeConfig(u, *interval), 0o644); err != nil {
				return nil, err
			}
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			return exec.Command(*vmagent, "-promscrape.config="+cfg, "-remoteWrite.url="+*sink, "-remoteWrite.label=agent=vmagent",
				"-remoteWrite.tmpDataPath="+filepath.Join(dir, "vmagent-data"), "-httpListenAddr=127.0.0.1:"+strconv.Itoa(port), "-loggerLevel=ERROR"), nil
		}},
		{"prometheus-agent", []string{*prometheus, "--version"}, `agent="prometheus-agent"`, func() (*exec.Cmd, error) {
			cfg := filepath.Join(dir, "prometheus.yml")
			body := append(scrapeConfig(u, *interval), fmt.Appendf(nil, "remote_write:\n  - url: %q\n", *sink)...)
			body = bytes.Replace(body, []byte("global:\n"), []byte("global:\n  external_labels: {agent: prometheus-agent}\n"), 1)
			if err := os.WriteFile(cfg, body, 0o644); err != nil {
				return nil, err
			}
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			return exec.Command(*prometheus, "--enable-feature=agent", "--config.file="+cfg,
				"--storage.agent.path="+filepath.Join(dir, "prometheus-agent"), "--web.listen-address=127.0.0.1:"+strconv.Itoa(port), "--log.level=error"), nil
		}},
	}
	var results []Footprint
	for _, a := range agents {
		cmd, err := a.start()
		if err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		res, err := measureProcess(cmd, *warmup, *duration)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		res.Agent = a.name
		if *query != "" {
			if res.Delivered, err = delivered(*query, a.selector); err != nil {
				return fmt.Errorf("%s: checking the sink: %w", a.name, err)
			}
			if want := int(min(*duration, 2*time.Minute) / *interval / 2); res.Delivered < want {
				return fmt.Errorf("%s: the sink holds %d node_load1 samples of it over the last two minutes, want at least %d", a.name, res.Delivered, want)
			}
		}
		res.Version = "this build"
		if a.version != nil {
			if v, err := exec.Command(a.version[0], a.version[1:]...).CombinedOutput(); err == nil {
				res.Version, _, _ = strings.Cut(string(v), "\n")
			}
		}
		results = append(results, res)
	}
	if *outFile != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*outFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	fmt.Fprintf(out, "one node_exporter scraped every %s and forwarded to the same sink; each agent measured %s after %s\n\n", interval, duration, warmup)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "agent\tCPU (% of a core)\tRSS max (MB)\tRSS end (MB)\tnode_load1 samples at the sink (2 min)\tversion\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%.2f\t%.1f\t%.1f\t%d\t%s\t\n", r.Agent, r.CPUCores*100, float64(r.RSSMax)/(1<<20), float64(r.RSSEnd)/(1<<20), r.Delivered, r.Version)
	}
	return tw.Flush()
}

// measureProcess waits out the warm-up, then measures CPU over duration
// and the largest RSS, sampled every second.
func measureProcess(cmd *exec.Cmd, warmup, duration time.Duration) (Footprint, error) {
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		for {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				close(exited)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	select {
	case <-time.After(warmup):
	case <-exited:
		return Footprint{}, errors.New("exited during the warm-up")
	}
	c0, err := procCPUSeconds(pid)
	if err != nil {
		return Footprint{}, err
	}
	t0 := time.Now()
	var f Footprint
	for time.Since(t0) < duration {
		time.Sleep(time.Second)
		rss, err := procRSSBytes(pid)
		if err != nil {
			return f, err
		}
		f.RSSMax, f.RSSEnd = max(f.RSSMax, rss), rss
	}
	c1, err := procCPUSeconds(pid)
	if err != nil {
		return f, err
	}
	f.Seconds = time.Since(t0).Seconds()
	f.CPUCores = (c1 - c0) / f.Seconds
	return f, nil
}

// delivered counts the samples of the agent's node_load1 the sink holds
// for the last two minutes (a VictoriaMetrics sink is flushed first).
func delivered(base, selector string) (int, error) {
	if resp, err := http.Get(base + "/internal/force_flush"); err == nil {
		resp.Body.Close()
	}
	q := url.Values{"query": {fmt.Sprintf("sum(count_over_time(node_load1{%s}[2m]))", selector)}}
	resp, err := http.Get(base + "/api/v1/query?" + q.Encode())
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, err
	}
	if len(body.Data.Result) == 0 {
		return 0, nil
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	n, err := strconv.ParseFloat(s, 64)
	return int(n), err
}

// scrapeConfig is a Prometheus scrape configuration for one target.
func scrapeConfig(u *url.URL, interval time.Duration) []byte {
	path := u.Path
	if path == "" {
		path = "/metrics"
	}
	return fmt.Appendf(nil, `global:
  scrape_interval: %s
  scrape_timeout: %s
scrape_configs:
  - job_name: node_exporter
    metrics_path: %s
    static_configs:
      - targets: [%q]
`, interval, interval, path, u.Host)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
