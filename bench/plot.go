package bench

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
	"time"
)

// Chart is a line chart rendered as SVG, with logarithmic axes where
// asked (the paper's graphs use a log vertical axis).
type Chart struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	Lines                 []Line
}

// Line is one named series of points.
type Line struct {
	Name   string
	Points [][2]float64
}

const (
	chartW, chartH             = 720, 440
	padL, padR, padT, padB     = 80, 20, 40, 90
	plotW, plotH               = chartW - padL - padR, chartH - padT - padB
	legendLineLen, legendSpace = 24, 18
)

var lineColours = []string{"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"}

// SVG renders the chart.
func (c Chart) SVG() []byte {
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, l := range c.Lines {
		for _, p := range l.Points {
			if (c.LogX && p[0] <= 0) || (c.LogY && p[1] <= 0) {
				continue
			}
			xmin, xmax = math.Min(xmin, p[0]), math.Max(xmax, p[0])
			ymin, ymax = math.Min(ymin, p[1]), math.Max(ymax, p[1])
		}
	}
	xa, ya := newAxis(xmin, xmax, c.LogX), newAxis(ymin, ymax, c.LogY)
	px := func(v float64) float64 { return padL + xa.frac(v)*plotW }
	py := func(v float64) float64 { return padT + (1-ya.frac(v))*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" text-anchor="middle">%s</text>`+"\n", chartW/2, html.EscapeString(c.Title))
	for _, t := range ya.ticks() {
		y := py(t)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", padL, y, padL+plotW, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", padL-6, y, tickLabel(t))
	}
	for _, t := range xa.ticks() {
		x := px(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, padT, x, padT+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, padT+plotH+16, tickLabel(t))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", padL, padT, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", padL+plotW/2, padT+plotH+36, html.EscapeString(c.XLabel))
	fmt.Fprintf(&b, `<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">%s</text>`+"\n", padT+plotH/2, padT+plotH/2, html.EscapeString(c.YLabel))
	for i, l := range c.Lines {
		colour := lineColours[i%len(lineColours)]
		var pts []string
		for _, p := range l.Points {
			if (c.LogX && p[0] <= 0) || (c.LogY && p[1] <= 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colour, strings.Join(pts, " "))
		for _, pt := range pts {
			xy := strings.Split(pt, ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], colour)
		}
		lx, ly := padL, padT+plotH+52+i*legendSpace
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", lx, ly, lx+legendLineLen, ly, colour)
		fmt.Fprintf(&b, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", lx+legendLineLen+6, ly, html.EscapeString(l.Name))
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// axis maps values to [0, 1], linearly or by decades.
type axis struct {
	lo, hi float64
	log    bool
}

func newAxis(min, max float64, log bool) axis {
	if math.IsInf(min, 0) {
		min, max = 0, 1
	}
	if log {
		lo, hi := math.Floor(math.Log10(min)), math.Ceil(math.Log10(max))
		if hi == lo {
			hi++
		}
		return axis{lo: lo, hi: hi, log: true}
	}
	if max == min {
		max = min + 1
	}
	return axis{lo: math.Min(0, min), hi: max}
}

func (a axis) frac(v float64) float64 {
	if a.log {
		return (math.Log10(v) - a.lo) / (a.hi - a.lo)
	}
	return (v - a.lo) / (a.hi - a.lo)
}

func (a axis) ticks() []float64 {
	var out []float64
	if a.log {
		for e := a.lo; e <= a.hi; e++ {
			out = append(out, math.Pow(10, e))
		}
		return out
	}
	step := math.Pow(10, math.Floor(math.Log10((a.hi-a.lo)/5)))
	for (a.hi-a.lo)/step > 10 {
		step *= 2
	}
	for v := math.Ceil(a.lo/step) * step; v <= a.hi+step/1e9; v += step {
		out = append(out, v)
	}
	return out
}

func tickLabel(v float64) string {
	switch {
	case v >= 1e6 && math.Mod(v, 1e6) == 0:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e3 && math.Mod(v, 1e3) == 0:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// PaperCharts are the paper's three graphs for the depths of base: nodes
// against sink requests/s and against sink servers (both at window), and
// the window against sink requests/s for nodes.
func PaperCharts(base func(levels int, window time.Duration) Model, depths int, window time.Duration) map[string]Chart {
	nodeCounts := []int{1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000}
	windows := []float64{1, 2, 5, 10, 15, 20, 30, 45, 60}
	requests := Chart{Title: fmt.Sprintf("Sink requests/s by nodes monitored (%s window)", seconds(window)),
		XLabel: "nodes", YLabel: "sink requests/s", LogX: true, LogY: true}
	servers := Chart{Title: fmt.Sprintf("Sink servers needed at %s requests/s each (%s window)", FormatRate(base(1, window).SinkCapacity), seconds(window)),
		XLabel: "nodes", YLabel: "sink servers", LogX: true, LogY: true}
	byWindow := Chart{Title: fmt.Sprintf("Sink requests/s by batch window (%s nodes)", thousands(float64(base(1, window).Nodes))),
		XLabel: "batch window (s)", YLabel: "sink requests/s", LogY: true}
	for levels := 1; levels <= depths; levels++ {
		name := levelWord(levels) + " level"
		r, s, w := Line{Name: name}, Line{Name: name}, Line{Name: name}
		for _, n := range nodeCounts {
			m := base(levels, window)
			m.Supernodes = SupernodesForFanOut(n, levels, fanOutOf(m))
			m.Nodes = n
			p := m.Project()
			r.Points = append(r.Points, [2]float64{float64(n), p.RequestsPerSecond})
			s.Points = append(s.Points, [2]float64{float64(n), float64(p.SinkServers)})
		}
		for _, sec := range windows {
			m := base(levels, time.Duration(sec*float64(time.Second)))
			w.Points = append(w.Points, [2]float64{sec, m.Project().RequestsPerSecond})
		}
		requests.Lines, servers.Lines, byWindow.Lines = append(requests.Lines, r), append(servers.Lines, s), append(byWindow.Lines, w)
	}
	return map[string]Chart{"nodes-requests.svg": requests, "nodes-servers.svg": servers, "window-requests.svg": byWindow}
}

// fanOutOf recovers the fan-out of a model's lowest supernode level.
func fanOutOf(m Model) int {
	if len(m.Supernodes) == 0 {
		return 1
	}
	return (m.Nodes + m.Supernodes[len(m.Supernodes)-1] - 1) / m.Supernodes[len(m.Supernodes)-1]
}
