package reader

import (
	"bufio"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/batch"
)

// OpenMetricsContentType is what the REST gateway answers by default.
const OpenMetricsContentType = "application/openmetrics-text; version=1.0.0; charset=utf-8"

// OpenMetricsWriter renders series as OpenMetrics 1.0 text. Series must
// arrive grouped by metric name (storage returns them sorted, which does
// that). The type is "unknown" because storage does not keep metadata; that
// type allows any sample name and any number of timestamped points.
type OpenMetricsWriter struct {
	w      *bufio.Writer
	family string
	buf    []byte
}

// NewOpenMetricsWriter writes to w.
func NewOpenMetricsWriter(w io.Writer) *OpenMetricsWriter {
	return &OpenMetricsWriter{w: bufio.NewWriterSize(w, 32<<10)}
}

// Series writes one series with all its samples.
func (o *OpenMetricsWriter) Series(ls labels.Labels, samples []batch.Sample) error {
	name := ls.Get(labels.MetricName)
	if name != o.family {
		o.family = name
		o.w.WriteString("# TYPE ")
		o.w.WriteString(name)
		o.w.WriteString(" unknown\n")
	}
	o.buf = appendSeriesID(o.buf[:0], name, ls)
	for _, s := range samples {
		o.w.Write(o.buf)
		o.w.WriteByte(' ')
		o.w.WriteString(formatValue(s.V))
		o.w.WriteByte(' ')
		o.w.WriteString(formatTimestamp(s.T))
		o.w.WriteByte('\n')
	}
	return nil
}

// Flush writes buffered text through.
func (o *OpenMetricsWriter) Flush() error { return o.w.Flush() }

// Close ends the exposition with the mandatory "# EOF" line and flushes.
func (o *OpenMetricsWriter) Close() error {
	o.w.WriteString("# EOF\n")
	return o.w.Flush()
}

func appendSeriesID(b []byte, name string, ls labels.Labels) []byte {
	b = append(b, name...)
	first := true
	ls.Range(func(l labels.Label) {
		if l.Name == labels.MetricName {
			return
		}
		if first {
			b = append(b, '{')
			first = false
		} else {
			b = append(b, ',')
		}
		b = append(b, l.Name...)
		b = append(b, '=', '"')
		b = appendEscaped(b, l.Value)
		b = append(b, '"')
	})
	if !first {
		b = append(b, '}')
	}
	return b
}

var escaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func appendEscaped(b []byte, s string) []byte {
	if !strings.ContainsAny(s, "\\\n\"") {
		return append(b, s...)
	}
	return append(b, escaper.Replace(s)...)
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// formatTimestamp renders milliseconds as OpenMetrics seconds.
func formatTimestamp(ms int64) string {
	if ms < 0 {
		return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)
	}
	sec, frac := ms/1000, ms%1000
	if frac == 0 {
		return strconv.FormatInt(sec, 10)
	}
	s := strconv.FormatInt(frac+1000, 10)[1:] // zero-padded to 3 digits
	return strconv.FormatInt(sec, 10) + "." + strings.TrimRight(s, "0")
}
