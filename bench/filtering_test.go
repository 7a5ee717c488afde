package bench

import (
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/bench/recording"
	"github.com/canopytree/canopy/filter"
)

// fixture is three minutes of a real node_exporter scraped every 2 s,
// recorded with canopyctl record.
const fixture = "testdata/node_exporter.rec.gz"

var gauges1pct = filter.Config{
	KeyframeWindows: filter.DefaultConfig().KeyframeWindows, StaleAfterWindows: filter.DefaultConfig().StaleAfterWindows,
	// Counters are never dead-banded; every gauge needs a 1 % move.
	Rules: []filter.Rule{{Matchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")}, Relative: 0.01}},
}

func replay(t testing.TB, cfg filter.Config) ReplayResult {
	frames, err := recording.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Replay(frames, ReplayConfig{Window: 5 * time.Second, Filter: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestReplayRecordedNodeExporter replays the fixture with the default
// filter and with a 1 % dead-band on gauges and checks what filtering
// must do: send no more than was scraped, send less with the dead-band,
// and cost fewer bytes than remote write 1.0 for the same data.
func TestReplayRecordedNodeExporter(t *testing.T) {
	def := replay(t, filter.DefaultConfig())
	band := replay(t, gauges1pct)
	for name, r := range map[string]ReplayResult{"default": def, "1% dead-band": band} {
		t.Logf("%s: %d windows, %d scraped, %.0f sent per window (%.1f%%), canopy %.2f B per scraped sample (%.2f per sent), remote write 1.0 %.2f B per sample",
			name, r.Windows, r.Scraped, r.SentPerWindow(), 100*float64(r.Sent)/float64(r.Scraped),
			r.WireBytesPerScrapedSample(), r.WireBytesPerSentSample(), r.RemoteWriteBytesPerSample())
		if r.Windows < 30 || r.Sent > r.Scraped || r.WireBytes >= r.RemoteWriteBytes {
			t.Errorf("%s: implausible replay %+v", name, r)
		}
	}
	if band.Sent >= def.Sent {
		t.Errorf("a 1%% dead-band sent %d samples, no fewer than the default %d", band.Sent, def.Sent)
	}
	if def.RemoteWriteBytes != band.RemoteWriteBytes {
		t.Error("remote write does not filter: its bytes cannot depend on canopy's rules")
	}
}

// BenchmarkReplay measures the replay itself and reports what it sends.
func BenchmarkReplay(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  filter.Config
	}{{"default", filter.DefaultConfig()}, {"gauges1pct", gauges1pct}} {
		b.Run(c.name, func(b *testing.B) {
			var r ReplayResult
			for range b.N {
				r = replay(b, c.cfg)
			}
			b.ReportMetric(r.SentPerWindow(), "sent/window")
			b.ReportMetric(float64(r.Scraped)/float64(r.Windows), "scraped/window")
			b.ReportMetric(r.WireBytesPerScrapedSample(), "B/scraped-sample")
			b.ReportMetric(r.RemoteWriteBytesPerSample(), "rw1-B/sample")
		})
	}
}
