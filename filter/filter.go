// Package filter owns arithmetic filtering on a node: deciding, for each
// sealed window, which samples are worth sending. Unchanged values are
// suppressed by default; rules add dead-bands (absolute or relative
// change needed); counters are sent only when they change; a keyframe
// with every value goes out every few windows so parents' caches heal; a
// series that disappears gets a Prometheus staleness marker. It knows
// nothing of transports and must not import the TSDB.
package filter

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Rule sets the dead-band for the series its matchers select: a new value
// is sent once it differs from the last sent one by at least Absolute, or
// by at least Relative times the last sent value's magnitude (whichever is
// set; both set: either suffices).
type Rule struct {
	Matchers []*labels.Matcher
	Absolute float64
	Relative float64
}

// Config configures a Filter.
type Config struct {
	Rules []Rule
	// KeyframeWindows sends every value once every this many windows
	// (0: never).
	KeyframeWindows int
	// StaleAfterWindows is how many windows a series may be absent (a
	// scrape interval longer than the window, a failed scrape) before it
	// gets a staleness marker and is forgotten.
	StaleAfterWindows int
}

// DefaultConfig suppresses unchanged values only, with a keyframe every 12
// windows (a minute at the default window) and staleness after 2 windows.
func DefaultConfig() Config {
	return Config{KeyframeWindows: 12, StaleAfterWindows: 2}
}

// RuleFromProto converts a pushed-down rule.
func RuleFromProto(r *canopyv1.FilterRule) (Rule, error) {
	out := Rule{Absolute: r.Absolute, Relative: r.Relative}
	if r.Absolute < 0 || r.Relative < 0 || math.IsNaN(r.Absolute) || math.IsNaN(r.Relative) {
		return Rule{}, fmt.Errorf("dead-band must be non-negative, got absolute %g relative %g", r.Absolute, r.Relative)
	}
	ms, err := batch.MatchersFromProto(r.Matchers)
	if err != nil {
		return Rule{}, err
	}
	out.Matchers = ms
	return out, nil
}

func (r *Rule) matches(ls labels.Labels) bool { return batch.Matches(r.Matchers, ls) }

// series is what the filter remembers of one series.
type series struct {
	labels labels.Labels
	typ    canopyv1.MetricType
	rule   int // index into rules, -1: unchanged suppression only
	sent   float64
	sentT  int64
	seen   uint64 // window in which it last appeared
}

// Filter is the per-node filtering state. It is not safe for concurrent
// use; the agent applies it when it seals a window.
type Filter struct {
	cfg    Config
	known  map[string]*series
	window uint64
	key    []byte
	stats  Stats
	forced bool // the next window is a keyframe
}

// Stats counts what filtering did.
type Stats struct {
	In, Out, Stale uint64
}

// New returns a filter with cfg.
func New(cfg Config) *Filter {
	return &Filter{cfg: cfg, known: map[string]*series{}}
}

// SetRules replaces the rules (pushed down the tree); every series is
// matched again.
func (f *Filter) SetRules(rules []Rule) {
	f.cfg.Rules = rules
	for _, s := range f.known {
		s.rule = f.ruleFor(s.labels)
	}
}

// SetKeyframeWindows changes the keyframe period (pushed down the tree).
func (f *Filter) SetKeyframeWindows(n int) { f.cfg.KeyframeWindows = n }

// Keyframe makes the next window a keyframe: a new parent, or one that
// lost or reset its cache, gets every value at once instead of waiting for
// the next periodic keyframe.
func (f *Filter) Keyframe() { f.forced = true }

func (f *Filter) ruleFor(ls labels.Labels) int {
	for i := range f.cfg.Rules {
		if f.cfg.Rules[i].matches(ls) {
			return i
		}
	}
	return -1
}

// Stats returns the counters since the filter was created.
func (f *Filter) Stats() Stats { return f.stats }

// Apply filters one window, sealed at now (milliseconds), in place: it
// returns the series with only the samples worth sending (series left with
// none are dropped), followed by staleness markers for series gone for
// StaleAfterWindows windows.
func (f *Filter) Apply(now int64, in []batch.Series) []batch.Series {
	f.window++
	keyframe := f.forced || f.cfg.KeyframeWindows > 0 && f.window%uint64(f.cfg.KeyframeWindows) == 0
	f.forced = false
	out := in[:0]
	for i := range in {
		s := in[i]
		f.stats.In += uint64(len(s.Samples))
		f.key = s.Labels.Bytes(f.key[:0])
		st, ok := f.known[string(f.key)]
		if !ok {
			st = &series{labels: s.Labels, typ: s.Type, rule: f.ruleFor(s.Labels)}
			f.known[string(f.key)] = st
		}
		st.seen = f.window
		kept := s.Samples[:0]
		for _, smp := range s.Samples {
			if !ok || keyframe || f.changed(st, smp.V) {
				kept = append(kept, smp)
				st.sent, st.sentT, ok = smp.V, smp.T, true
			}
		}
		if len(kept) > 0 {
			s.Samples = kept
			out = append(out, s)
			f.stats.Out += uint64(len(kept))
		}
	}
	return f.expire(now, out)
}

// changed decides whether v differs enough from the last sent value.
func (f *Filter) changed(st *series, v float64) bool {
	if value.IsStaleNaN(v) || math.IsNaN(v) != math.IsNaN(st.sent) {
		return true
	}
	d := math.Abs(v - st.sent)
	if math.IsNaN(v) || d == 0 {
		return false
	}
	// Counters are cumulative: any change is news (and a reset must not
	// hide in a dead-band).
	if st.rule < 0 || st.typ == canopyv1.MetricType_METRIC_TYPE_COUNTER {
		return true
	}
	r := &f.cfg.Rules[st.rule]
	if r.Absolute == 0 && r.Relative == 0 {
		return true
	}
	return (r.Absolute > 0 && d >= r.Absolute) || (r.Relative > 0 && d >= r.Relative*math.Abs(st.sent))
}

// expire appends staleness markers for series absent long enough and
// forgets them.
func (f *Filter) expire(now int64, out []batch.Series) []batch.Series {
	if f.cfg.StaleAfterWindows <= 0 {
		return out
	}
	for _, k := range slices.Sorted(maps.Keys(f.known)) { // deterministic order
		st := f.known[k]
		if f.window-st.seen < uint64(f.cfg.StaleAfterWindows) {
			continue
		}
		t := max(now, st.sentT+1)
		out = append(out, batch.Series{Labels: st.labels, Type: st.typ, Samples: []batch.Sample{{T: t, V: math.Float64frombits(value.StaleNaN)}}})
		delete(f.known, k)
		f.stats.Stale++
	}
	return out
}
