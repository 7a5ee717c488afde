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
	id := len(o.buf)
	for _, s := range samples {
		line := append(o.buf[:id], ' ')
		line = appendValue(line, s.V)
		line = append(line, ' ')
		line = appendTimestamp(line, s.T)
		line = append(line, '\n')
		o.buf = line
		if _, err := o.w.Write(line); err != nil {
			return err
		}
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

func appendValue(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// appendTimestamp renders milliseconds as OpenMetrics seconds.
func appendTimestamp(b []byte, ms int64) []byte {
	if ms < 0 {
		return strconv.AppendFloat(b, float64(ms)/1000, 'f', -1, 64)
	}
	sec, frac := ms/1000, ms%1000
	b = strconv.AppendInt(b, sec, 10)
	if frac == 0 {
		return b
	}
	b = append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
	for b[len(b)-1] == '0' {
		b = b[:len(b)-1]
	}
	return b
}
