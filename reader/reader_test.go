package reader

import (
	"bytes"
	"errors"
	"io"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/canopytree/canopy/batch"
)

func TestParseTimestamp(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for in, want := range map[string]int64{
		"1700000000":                  1_700_000_000_000,
		"1700000000.25":               1_700_000_000_250,
		"1700000000123":               1_700_000_000_123,
		"2023-11-14T22:13:20Z":        1_700_000_000_000,
		"2023-11-14T23:13:20.5+01:00": 1_700_000_000_500,
		"now":                         1_700_000_000_000,
		"0":                           0,
	} {
		got, err := ParseTimestamp(in, now)
		if err != nil || got != want {
			t.Errorf("%q: got %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-5", "NaN", "1e400", "2023-13-01T00:00:00Z"} {
		if _, err := ParseTimestamp(bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestOpenMetricsRoundTrip writes awkward series and parses them back with
// Prometheus's OpenMetrics parser.
func TestOpenMetricsRoundTrip(t *testing.T) {
	type series struct {
		ls      labels.Labels
		samples []batch.Sample
	}
	in := []series{
		{labels.FromStrings("__name__", "a", "path", "C:\\dir\n\"quoted\""), []batch.Sample{{T: 1000, V: 1}, {T: 1500, V: math.Inf(1)}, {T: 2001, V: -0.5}}},
		{labels.FromStrings("__name__", "a", "path", "plain"), []batch.Sample{{T: 0, V: math.NaN()}}},
		{labels.FromStrings("__name__", "b_total"), []batch.Sample{{T: 1_700_000_000_007, V: 1e-300}}},
	}
	var buf bytes.Buffer
	w := NewOpenMetricsWriter(&buf)
	for _, s := range in {
		if err := w.Series(s.ls, s.samples); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	p, err := textparse.New(buf.Bytes(), "application/openmetrics-text; version=1.0.0", nil, textparse.ParserOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []series
	var ls labels.Labels
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%v\n%s", err, buf.String())
		}
		if e != textparse.EntrySeries {
			continue
		}
		_, ts, v := p.Series()
		p.Labels(&ls)
		if n := len(got); n == 0 || !labels.Equal(got[n-1].ls, ls) {
			got = append(got, series{ls: ls.Copy()})
		}
		got[len(got)-1].samples = append(got[len(got)-1].samples, batch.Sample{T: *ts, V: v})
	}
	if len(got) != len(in) {
		t.Fatalf("got %d series, want %d\n%s", len(got), len(in), buf.String())
	}
	for i := range in {
		if !labels.Equal(got[i].ls, in[i].ls) {
			t.Errorf("series %d: labels %s, want %s", i, got[i].ls, in[i].ls)
		}
		for j, s := range in[i].samples {
			g := got[i].samples[j]
			if g.T != s.T || math.Float64bits(g.V) != math.Float64bits(s.V) && !(math.IsNaN(g.V) && math.IsNaN(s.V)) {
				t.Errorf("series %d sample %d: %+v, want %+v", i, j, g, s)
			}
		}
	}
}

func TestOpenMetricsNumbers(t *testing.T) {
	for ms, want := range map[int64]string{0: "0", 1000: "1", 1500: "1.5", 1005: "1.005", 1050: "1.05", 1_700_000_000_123: "1700000000.123", -1500: "-1.5"} {
		if got := string(appendTimestamp(nil, ms)); got != want {
			t.Errorf("timestamp %d: %q, want %q", ms, got, want)
		}
	}
	for v, want := range map[float64]string{0.25: "0.25", 1e21: "1e+21", math.Inf(1): "+Inf", math.Inf(-1): "-Inf", -3: "-3"} {
		if got := string(appendValue(nil, v)); got != want {
			t.Errorf("value %v: %q, want %q", v, got, want)
		}
	}
	if got := string(appendValue(nil, math.NaN())); got != "NaN" {
		t.Errorf("NaN: %q", got)
	}
}
