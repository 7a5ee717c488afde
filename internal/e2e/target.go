package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
)

// ExporterTarget serves node_exporter-format text (classic Prometheus text,
// as node_exporter does) whose counters advance and gauges drift on every
// scrape, so successive scrapes differ like a real machine's.
type ExporterTarget struct {
	*httptest.Server
	scrapes atomic.Int64
	cpus    int
	devices []string
}

// NewExporterTarget starts a target on loopback.
func NewExporterTarget(cpus int) *ExporterTarget {
	t := &ExporterTarget{cpus: cpus, devices: []string{"eth0", "lo", "wlan0"}}
	t.Server = httptest.NewServer(http.HandlerFunc(t.serve))
	return t
}

// Scrapes is how many times the target was scraped.
func (t *ExporterTarget) Scrapes() int64 { return t.scrapes.Load() }

// SeriesPerScrape is how many series one scrape returns.
func (t *ExporterTarget) SeriesPerScrape() int {
	return t.cpus*8 + 4 + 3 + len(t.devices)*4 + 3*3
}

func (t *ExporterTarget) serve(w http.ResponseWriter, _ *http.Request) {
	n := t.scrapes.Add(1)
	var b strings.Builder
	fmt.Fprintln(&b, "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.")
	fmt.Fprintln(&b, "# TYPE node_cpu_seconds_total counter")
	for cpu := range t.cpus {
		for i, mode := range []string{"idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"} {
			fmt.Fprintf(&b, "node_cpu_seconds_total{cpu=\"%d\",mode=\"%s\"} %g\n", cpu, mode, float64(n*int64(i+1))*0.37+float64(cpu))
		}
	}
	for _, m := range []struct {
		name string
		v    float64
	}{
		{"MemTotal", 8 << 30}, {"MemAvailable", float64(4<<30 + n*4096)}, {"MemFree", float64(2<<30 - n*4096)}, {"Cached", 1 << 30},
	} {
		fmt.Fprintf(&b, "# HELP node_memory_%s_bytes Memory information field %s_bytes.\n", m.name, m.name)
		fmt.Fprintf(&b, "# TYPE node_memory_%s_bytes gauge\n", m.name)
		fmt.Fprintf(&b, "node_memory_%s_bytes %g\n", m.name, m.v)
	}
	for i, l := range []string{"node_load1", "node_load5", "node_load15"} {
		fmt.Fprintf(&b, "# TYPE %s gauge\n%s %g\n", l, l, 0.25*float64(i+1)+float64(n%7)/100)
	}
	for _, dir := range []string{"receive", "transmit"} {
		for _, unit := range []string{"bytes", "packets"} {
			fmt.Fprintf(&b, "# TYPE node_network_%s_%s_total counter\n", dir, unit)
			for d, dev := range t.devices {
				fmt.Fprintf(&b, "node_network_%s_%s_total{device=\"%s\"} %d\n", dir, unit, dev, n*int64(1500*(d+1)))
			}
		}
	}
	for _, f := range []string{"size", "avail", "free"} {
		fmt.Fprintf(&b, "# TYPE node_filesystem_%s_bytes gauge\n", f)
		for i, mp := range []string{"/", "/boot", "/data"} {
			fmt.Fprintf(&b, "node_filesystem_%s_bytes{device=\"/dev/sda%d\",fstype=\"ext4\",mountpoint=\"%s\"} %d\n", f, i+1, mp, (int64(100)<<30)-n*int64(i+1)*512)
		}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}
