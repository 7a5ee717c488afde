package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The Astral paper's projection ("Evaluation"): a sink receives one
// request per window from each node that reports to it directly; a
// hierarchy puts supernodes between the nodes and the sink, so only the
// top level reports there; with a window of 0 every sender updates once
// per second. Batching at every level makes the worst-case freshness the
// sum of the windows along a path; without batching it is the hops.

// Model is one monitored system.
type Model struct {
	// Nodes monitored.
	Nodes int
	// Supernodes per level below the sink, top down: none for the
	// centralised baseline, [1000] for two levels, [10, 1000] for three.
	Supernodes []int
	// Window is the batch window at every level; 0 sends every update
	// (UpdatesPerSecond per sender).
	Window time.Duration
	// UpdatesPerSecond is a sender's rate without batching (the paper: 1).
	UpdatesPerSecond float64
	// SeriesPerNode, ScrapeInterval and FilterRatio (the fraction of
	// scraped samples the filter sends) give the samples reaching the
	// sink; BytesPerSample its bytes.
	SeriesPerNode  int
	ScrapeInterval time.Duration
	FilterRatio    float64
	BytesPerSample float64
	// SinkCapacity is the requests per second one sink server handles
	// (the paper: 500).
	SinkCapacity float64
}

// Projection is what a Model predicts at the sink.
type Projection struct {
	Levels int `json:"levels"`
	// Senders report to the sink directly.
	Senders           int     `json:"senders"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	SamplesPerSecond  float64 `json:"samples_per_second"`
	BytesPerSecond    float64 `json:"bytes_per_second"`
	// Freshness is the worst-case delay batching adds (Window × Levels);
	// with no batching the data is Levels hops old and Freshness is 0.
	Freshness   time.Duration `json:"freshness_ns"`
	SinkServers int           `json:"sink_servers"`
}

// Levels counts the levels of the hierarchy, the nodes' own included.
func (m Model) Levels() int { return len(m.Supernodes) + 1 }

// Project computes the sink's load.
func (m Model) Project() Projection {
	p := Projection{Levels: m.Levels(), Senders: m.Nodes}
	if len(m.Supernodes) > 0 {
		p.Senders = m.Supernodes[0]
	}
	rate := m.UpdatesPerSecond
	if m.Window > 0 {
		rate = 1 / m.Window.Seconds()
	}
	p.RequestsPerSecond = float64(p.Senders) * rate
	if m.ScrapeInterval > 0 {
		p.SamplesPerSecond = float64(m.Nodes) * float64(m.SeriesPerNode) / m.ScrapeInterval.Seconds() * m.FilterRatio
	}
	p.BytesPerSecond = p.SamplesPerSecond * m.BytesPerSample
	p.Freshness = m.Window * time.Duration(p.Levels)
	if m.SinkCapacity > 0 {
		p.SinkServers = int(math.Ceil(p.RequestsPerSecond / m.SinkCapacity))
	}
	return p
}

// SupernodesForFanOut is the supernodes per level, top down, of a tree of
// the given levels whose supernodes each have fanOut children: the
// paper's 10 + 1000 for 100,000 nodes, three levels and fan-out 100.
func SupernodesForFanOut(nodes, levels, fanOut int) []int {
	var out []int
	n := nodes
	for range levels - 1 {
		n = (n + fanOut - 1) / fanOut
		out = append([]int{n}, out...)
	}
	return out
}

// PaperModel is the paper's system: 100,000 nodes, one update per second
// without batching, 500 requests/s per sink server, supernodes with 100
// children each.
func PaperModel(levels int, window time.Duration) Model {
	return Model{
		Nodes: 100_000, Supernodes: SupernodesForFanOut(100_000, levels, 100), Window: window,
		UpdatesPerSecond: 1, SinkCapacity: 500,
	}
}

// PaperWindows are the columns of the paper's tables.
var PaperWindows = []time.Duration{0, 5 * time.Second, 10 * time.Second, 30 * time.Second}

// Table is a projection table: one row per hierarchy depth, one column
// per window, cells formatted as the paper prints them.
type Table struct {
	Title   string
	Columns []string
	Rows    []TableRow
}

// TableRow is one depth.
type TableRow struct {
	Name  string
	Cells []string
}

// DepthName names a hierarchy as the paper does.
func DepthName(supernodes []int) string {
	switch len(supernodes) {
	case 0:
		return "One Level (Baseline Centralized)"
	case 1:
		return fmt.Sprintf("Two Level (%d supernodes)", supernodes[0])
	}
	parts := make([]string, len(supernodes))
	for i, s := range supernodes {
		parts[i] = strconv.Itoa(s)
	}
	return fmt.Sprintf("%s Level (%s supernodes)", levelWord(len(supernodes)+1), strings.Join(parts, " + "))
}

func levelWord(n int) string {
	if words := []string{"", "One", "Two", "Three", "Four", "Five"}; n < len(words) {
		return words[n]
	}
	return strconv.Itoa(n)
}

// Tables computes the paper's two tables (sink requests/s and worst-case
// freshness) for base at each depth and window.
func Tables(base func(levels int, window time.Duration) Model, depths int, windows []time.Duration) (requests, freshness Table) {
	requests.Title = "Sink requests per second"
	freshness.Title = "Worst-case freshness"
	for _, w := range windows {
		col := "0"
		if w > 0 {
			col = seconds(w)
		}
		requests.Columns = append(requests.Columns, col)
		freshness.Columns = append(freshness.Columns, col)
	}
	for levels := 1; levels <= depths; levels++ {
		m := base(levels, 0)
		rr, fr := TableRow{Name: DepthName(m.Supernodes)}, TableRow{Name: DepthName(m.Supernodes)}
		for _, w := range windows {
			m.Window = w
			p := m.Project()
			rr.Cells = append(rr.Cells, FormatRate(p.RequestsPerSecond))
			fr.Cells = append(fr.Cells, FormatFreshness(p))
		}
		requests.Rows = append(requests.Rows, rr)
		freshness.Rows = append(freshness.Rows, fr)
	}
	return requests, freshness
}

// FormatRate prints a rate as the paper does: whole numbers with thousands
// separators from 10 up, at most two decimals below.
func FormatRate(v float64) string {
	if v >= 10 {
		return thousands(math.Round(v))
	}
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}

// FormatFreshness prints a worst-case delay as the paper does: the
// batching delay, or "0 + N hops" for an unbatched hierarchy.
func FormatFreshness(p Projection) string {
	if p.Freshness > 0 {
		return seconds(p.Freshness)
	}
	if p.Levels > 1 {
		return fmt.Sprintf("0 + %d hops", p.Levels)
	}
	return "0"
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

func thousands(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// String renders a table with aligned columns.
func (t Table) String() string {
	width := len("Depth / Batch Window Size")
	for _, r := range t.Rows {
		width = max(width, len(r.Name))
	}
	cw := make([]int, len(t.Columns))
	for i, c := range t.Columns {
		cw[i] = len(c)
		for _, r := range t.Rows {
			cw[i] = max(cw[i], len(r.Cells[i]))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%-*s", t.Title, width, "Depth / Batch Window Size")
	for i, c := range t.Columns {
		fmt.Fprintf(&b, "  %*s", cw[i], c)
	}
	b.WriteByte('\n')
	for _, r := range t.Rows {
		fmt.Fprintf(&b, "%-*s", width, r.Name)
		for i, c := range r.Cells {
			fmt.Fprintf(&b, "  %*s", cw[i], c)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
