package filter

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

var (
	gauge   = canopyv1.MetricType_METRIC_TYPE_GAUGE
	counter = canopyv1.MetricType_METRIC_TYPE_COUNTER
)

func one(name string, typ canopyv1.MetricType, t int64, v float64) batch.Series {
	return batch.Series{Labels: labels.FromStrings("__name__", name, "node", "n1"), Type: typ, Samples: []batch.Sample{{T: t, V: v}}}
}

// run feeds one value per window for a single series and returns what
// was sent, NaN where nothing was.
func run(f *Filter, name string, typ canopyv1.MetricType, vals ...float64) []float64 {
	var out []float64
	for i, v := range vals {
		t := int64(i+1) * 5000
		sent := f.Apply(t, []batch.Series{one(name, typ, t, v)})
		got := math.NaN()
		for _, s := range sent {
			if s.Labels.Get("__name__") == name && !value.IsStaleNaN(s.Samples[0].V) {
				got = s.Samples[0].V
			}
		}
		out = append(out, got)
	}
	return out
}

func same(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(a[i]) && math.IsNaN(b[i])) {
			return false
		}
	}
	return true
}

var x = math.NaN() // "not sent"

func TestDefaultsSuppressOnlyUnchanged(t *testing.T) {
	f := New(Config{})
	if got := run(f, "g", gauge, 5, 5, 5, 5.000001, 5.000001, 7); !same(got, []float64{5, x, x, 5.000001, x, 7}) {
		t.Fatalf("gauge: %v", got)
	}
	if got := run(New(Config{}), "c", counter, 10, 10, 11, 11, 0); !same(got, []float64{10, x, 11, x, 0}) {
		t.Fatalf("counter: %v", got)
	}
}

func TestDeadBands(t *testing.T) {
	abs := New(Config{Rules: []Rule{{Matchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "temp")}, Absolute: 1}}})
	if got := run(abs, "temp", gauge, 100, 100.5, 100.9, 101.2, 100.3, 100.1); !same(got, []float64{100, x, x, 101.2, x, 100.1}) {
		t.Fatalf("absolute: %v", got)
	}
	rel := New(Config{Rules: []Rule{{Matchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", "node_.*")}, Relative: 0.01}}})
	if got := run(rel, "node_load1", gauge, 100, 100.5, 101, 101.5, 99.9); !same(got, []float64{100, x, 101, x, 99.9}) {
		t.Fatalf("relative: %v", got)
	}
	// A dead-band never hides a counter's change.
	relc := New(Config{Rules: []Rule{{Relative: 0.5}}})
	if got := run(relc, "c_total", counter, 100, 101, 101, 102); !same(got, []float64{100, 101, x, 102}) {
		t.Fatalf("counter under a dead-band: %v", got)
	}
	// Unmatched series keep the default.
	if got := run(rel, "other", gauge, 1, 1.001, 1.001); !same(got, []float64{1, 1.001, x}) {
		t.Fatalf("unmatched: %v", got)
	}
}

func TestKeyframes(t *testing.T) {
	f := New(Config{KeyframeWindows: 3})
	if got := run(f, "g", gauge, 1, 1, 1, 1, 1, 1, 1); !same(got, []float64{1, x, 1, x, x, 1, x}) {
		t.Fatalf("keyframes: %v", got)
	}
}

// A forced keyframe (new parent, pushed config) sends everything once and
// leaves the periodic schedule alone.
func TestForcedKeyframe(t *testing.T) {
	f := New(Config{KeyframeWindows: 4})
	got := run(f, "g", gauge, 1, 1)
	f.Keyframe()
	got = append(got, run(f, "g", gauge, 1, 1, 1, 1)...)
	if !same(got, []float64{1, x, 1, 1, x, x}) { // windows 3 (forced) and 4 (periodic)
		t.Fatalf("forced keyframe: %v", got)
	}
}

func TestNaNs(t *testing.T) {
	f := New(Config{})
	nan := math.NaN()
	if got := run(f, "g", gauge, nan, nan, 1, 1, nan); len(got) != 5 || !math.IsNaN(got[0]) || !math.IsNaN(got[1]) || got[2] != 1 || !math.IsNaN(got[3]) {
		t.Fatalf("NaN handling: %v", got)
	}
	if f.Stats().Out != 3 {
		t.Fatalf("sent %d samples, want 3 (NaN, 1, NaN)", f.Stats().Out)
	}
}

func TestStalenessMarkers(t *testing.T) {
	f := New(Config{StaleAfterWindows: 2})
	a, b := one("a", gauge, 5000, 1), one("b", gauge, 5000, 2)
	f.Apply(5000, []batch.Series{a, b})
	// b is absent once (a slow scrape): no marker yet.
	if out := f.Apply(10000, []batch.Series{one("a", gauge, 10000, 1)}); len(out) != 0 {
		t.Fatalf("window 2: %v", out)
	}
	out := f.Apply(15000, []batch.Series{one("a", gauge, 15000, 1)})
	if len(out) != 1 || out[0].Labels.Get("__name__") != "b" || !value.IsStaleNaN(out[0].Samples[0].V) || out[0].Samples[0].T != 15000 {
		t.Fatalf("window 3: want a staleness marker for b, got %v", out)
	}
	// b comes back: it is new again and sent even though its value is old.
	out = f.Apply(20000, []batch.Series{one("a", gauge, 20000, 1), one("b", gauge, 20000, 2)})
	if len(out) != 1 || out[0].Labels.Get("__name__") != "b" || out[0].Samples[0].V != 2 {
		t.Fatalf("window 4: %v", out)
	}
	if f.Stats().Stale != 1 {
		t.Fatalf("stale count %d", f.Stats().Stale)
	}
}

func TestRulesPushedDown(t *testing.T) {
	f := New(Config{})
	run(f, "temp", gauge, 20)
	r, err := RuleFromProto(&canopyv1.FilterRule{Absolute: 5, Matchers: []*canopyv1.LabelMatcher{{Name: "__name__", Type: canopyv1.MatchType_MATCH_TYPE_EQUAL, Value: "temp"}}})
	if err != nil {
		t.Fatal(err)
	}
	f.SetRules([]Rule{r})
	if got := run(f, "temp", gauge, 21, 24, 26); !same(got, []float64{x, x, 26}) {
		t.Fatalf("after push-down: %v", got)
	}
	for _, bad := range []*canopyv1.FilterRule{
		{Absolute: -1},
		{Matchers: []*canopyv1.LabelMatcher{{Name: "a", Type: canopyv1.MatchType_MATCH_TYPE_REGEX, Value: "("}}},
		{Matchers: []*canopyv1.LabelMatcher{{Name: "a"}}},
	} {
		if _, err := RuleFromProto(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestHoldLastValueIsWithinTheDeadBand is the contract parents rely on:
// holding the last sent value (an absent update means "unchanged") never
// misses the true value by the dead-band or more, and is exact without
// one.
func TestHoldLastValueIsWithinTheDeadBand(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, band := range []float64{0, 0.5, 2} {
		cfg := Config{KeyframeWindows: 7}
		if band > 0 {
			cfg.Rules = []Rule{{Absolute: band}}
		}
		f := New(cfg)
		v, held := 50.0, math.NaN()
		for i := range 5000 {
			switch rng.IntN(4) {
			case 0: // unchanged
			case 1:
				v += rng.NormFloat64() * 0.1
			default:
				v += rng.NormFloat64()
			}
			t0 := int64(i+1) * 5000
			for _, s := range f.Apply(t0, []batch.Series{one("g", gauge, t0, v)}) {
				held = s.Samples[len(s.Samples)-1].V
			}
			if d := math.Abs(held - v); (band == 0 && d != 0) || (band > 0 && d >= band) {
				t.Fatalf("band %g, window %d: held %g, true %g", band, i, held, v)
			}
		}
		t.Logf("band %g: sent %d of %d samples", band, f.Stats().Out, f.Stats().In)
	}
}
