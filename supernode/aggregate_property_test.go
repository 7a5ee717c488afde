package supernode

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/filter"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// propLeaf is a leaf in the property model: true values, its own filter,
// the batches it sealed, and where it is attached.
type propLeaf struct {
	id     string
	dc     string
	values []float64 // one per series, now
	// reported are the values as of the last window a parent received:
	// what any aggregate can know (within the failure detector's deadline).
	reported []float64
	filter   *filter.Filter
	sealed   [][]batch.Series
	parent   string // "" while detached
	prev     string
	acked    int // windows the current parent has
	// moved until this step: the old parent may still count it.
	movedUntil int
}

// propParent is one supernode: its aggregator and its failure detector's
// view of its children (silent for how many steps).
type propParent struct {
	agg    *Aggregator
	silent map[string]int
}

const (
	propMissed = 2  // steps of silence before suspect
	propDead   = 3  // before dead
	propForget = 12 // before forgotten: the soft-state timeout
)

func (p *propParent) states() map[string]canopyv1.ChildState {
	out := map[string]canopyv1.ChildState{}
	for id, s := range p.silent {
		switch {
		case s > propForget:
			delete(p.silent, id)
		case s > propDead:
			out[id] = dead
		case s > propMissed:
			out[id] = suspect
		default:
			out[id] = healthy
		}
	}
	return out
}

// TestAggregatesEqualBruteForce drives leaves under two supernodes under a
// root with random values, filtering (unchanged suppression and
// keyframes), retransmits of old batches, and re-parenting (graceful, and
// by losing the parent). Whenever the root's NI says an aggregate can be
// trusted (reachable == all, dup == 0), the root's sum, count, min and max
// equal a brute-force computation over the same inputs: every leaf's
// values as of the last window a parent received from it (a value not yet
// reported cannot be known; the failure detector bounds how old a trusted
// one is). When the moves stop, every aggregate is trusted again.
func TestAggregatesEqualBruteForce(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { propertyRun(t, seed) })
	}
}

func propertyRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	rules := memRule(false)
	parents := map[string]*propParent{
		"sa": {agg: NewAggregator(rules), silent: map[string]int{}},
		"sb": {agg: NewAggregator(rules), silent: map[string]int{}},
	}
	root := NewAggregator(rules)
	var leaves []*propLeaf
	for i := range 12 {
		l := &propLeaf{
			id: fmt.Sprintf("l%02d", i), dc: []string{"eu", "us"}[i%2],
			values: make([]float64, 1+i%3),
			filter: filter.New(filter.Config{KeyframeWindows: 5, StaleAfterWindows: 2}),
			parent: []string{"sa", "sb"}[i%2],
		}
		for j := range l.values {
			l.values[j] = float64(rng.IntN(1000))
		}
		parents[l.parent].silent[l.id] = 0
		leaves = append(leaves, l)
	}
	const steps, quiet = 400, 30
	trusted := 0
	for step := range steps {
		now := int64(step+1) * 1000
		moving := step < steps-quiet
		for _, p := range parents {
			for id := range p.silent {
				p.silent[id]++
			}
		}
		for _, l := range leaves {
			// Values: most stay, some change.
			for j := range l.values {
				if rng.IntN(3) == 0 {
					l.values[j] = float64(rng.IntN(1000))
				}
			}
			if moving && step > 0 && l.parent != "" && rng.IntN(40) == 0 {
				l.move(rng, parents, step)
			} else if l.parent == "" && rng.IntN(3) == 0 {
				l.attach(rng, parents)
			}
			l.seal(now)
			l.deliver(rng, parents[l.parent], step)
		}
		for _, id := range []string{"sa", "sb"} {
			req := &canopyv1.HeartbeatRequest{Node: &canopyv1.NodeInfo{Id: id, Dc: "eu"}}
			parents[id].agg.Report(parents[id].states()).Heartbeat(req, now)
			root.Observe(id, req, nil)
		}
		rep := root.Report(map[string]canopyv1.ChildState{"sa": healthy, "sb": healthy})
		for _, dc := range []string{"eu", "us"} {
			p := partialOrNil(rep, "dc:mem_bytes", dc)
			if p == nil || p.NI.Reachable != p.NI.All || p.NI.Dup != 0 {
				if !moving && step >= steps-quiet/2 {
					t.Fatalf("step %d: %s not trusted after the moves stopped: %+v", step, dc, p)
				}
				continue
			}
			trusted++
			want := bruteForce(leaves, parents, dc)
			if p.Sum != want.Sum || p.Count != want.Count || p.Min != want.Min || p.Max != want.Max || p.NI.All != want.NI.All {
				t.Fatalf("step %d, %s trusted (NI %+v) but sum/count/min/max %g/%d/%g/%g, brute force %g/%d/%g/%g over %d members",
					step, dc, p.NI, p.Sum, p.Count, p.Min, p.Max, want.Sum, want.Count, want.Min, want.Max, want.NI.All)
			}
		}
	}
	if trusted < steps/2 {
		t.Fatalf("only %d of %d group-steps trusted: the property was hardly exercised", trusted, 2*steps)
	}
}

func partialOrNil(rep *Report, name, dc string) *Partial {
	for _, p := range rep.Partials {
		if p.Name == name && p.Group.Get("dc") == dc {
			return p
		}
	}
	return nil
}

// bruteForce aggregates the reported values of the leaves that are
// members of the tree: known to a parent, not forgotten.
func bruteForce(leaves []*propLeaf, parents map[string]*propParent, dc string) *Partial {
	p := newPartial("dc:mem_bytes", labels.FromStrings("dc", dc))
	for _, l := range leaves {
		_, inA := parents["sa"].silent[l.id]
		_, inB := parents["sb"].silent[l.id]
		if l.dc != dc || !inA && !inB {
			continue
		}
		p.NI.All++
		for _, v := range l.reported {
			p.addValue(v)
		}
	}
	return p
}

// seal filters this window's true values into the next batch.
func (l *propLeaf) seal(now int64) {
	var in []batch.Series
	for j, v := range l.values {
		in = append(in, batch.Series{
			Labels:  labels.FromStrings("__name__", "mem_bytes", "node", l.id, "dc", l.dc, "slot", fmt.Sprint(j)),
			Type:    canopyv1.MetricType_METRIC_TYPE_GAUGE,
			Samples: []batch.Sample{{T: now, V: v}},
		})
	}
	l.sealed = append(l.sealed, l.filter.Apply(now, in))
}

// deliver sends every window the parent does not have yet, in order, and
// now and then an old one again.
func (l *propLeaf) deliver(rng *rand.Rand, p *propParent, step int) {
	if p == nil {
		return
	}
	req := hb(l.id, l.dc, step < l.movedUntil)
	for l.acked < len(l.sealed) {
		p.agg.Observe(l.id, req, one(l.id, 1, uint64(l.acked+1), cloneSeries(l.sealed[l.acked])...))
		l.acked++
	}
	if rng.IntN(4) == 0 {
		i := rng.IntN(len(l.sealed))
		p.agg.Observe(l.id, req, one(l.id, 1, uint64(i+1), cloneSeries(l.sealed[i])...))
	}
	p.silent[l.id] = 0
	l.reported = append(l.reported[:0], l.values...)
}

func cloneSeries(in []batch.Series) []batch.Series {
	return append([]batch.Series(nil), in...)
}

// move leaves the parent: half the time gracefully (the new parent gets
// the next window, a keyframe, with "moved"; then the old one forgets the
// leaf), otherwise by losing it (the old parent's failure
// detector takes its course, and the leaf says "moved" wherever it
// re-attaches until the old parent has forgotten it).
func (l *propLeaf) move(rng *rand.Rand, parents map[string]*propParent, step int) {
	old := l.parent
	l.prev = old
	if rng.IntN(2) == 0 {
		l.parent = other(old)
		l.acked = len(l.sealed) // the new parent starts with the next window, a keyframe
		l.movedUntil = step + 1
		l.filter.Keyframe()
		delete(parents[old].silent, l.id)
		return
	}
	l.parent = ""
	l.movedUntil = step + propForget + 1
}

func other(id string) string { return map[string]string{"sa": "sb", "sb": "sa"}[id] }

// attach re-joins after losing the parent, the old one or the other; the
// new parent gets everything not yet acknowledged (here: everything) and
// the next window is a keyframe.
func (l *propLeaf) attach(rng *rand.Rand, parents map[string]*propParent) {
	l.parent = other(l.prev)
	if rng.IntN(2) == 0 {
		l.parent, l.movedUntil = l.prev, 0 // the same parent: no second copy
	}
	l.acked = 0
	l.filter.Keyframe()
	parents[l.parent].silent[l.id] = 0
}
