package leaf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// acceptHeader prefers OpenMetrics and falls back to the classic text
// format, as Prometheus does.
const acceptHeader = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"

// Identity is what every series a node produces is labelled with.
type Identity struct {
	Node string
	DC   string
}

// Label names the agent sets. A scraped series that already has one keeps
// its value under exported_<name>, as Prometheus does with honor_labels off.
const (
	LabelNode      = "node"
	LabelDC        = "dc"
	LabelLevel     = "level"
	LabelJob       = "job"
	LabelApp       = "app"
	LabelContainer = "container"
)

var reservedLabels = []string{LabelNode, LabelDC, LabelLevel, LabelJob, LabelApp, LabelContainer}

// Why a scrape failed, as the reason label of canopy_scrape_failures_total.
const (
	ReasonConnect  = "connect"
	ReasonTimeout  = "timeout"
	ReasonStatus   = "http_status"
	ReasonTooLarge = "body_too_large"
	ReasonParse    = "parse"
)

// ScrapedSample is one parsed and labelled sample.
type ScrapedSample struct {
	Labels labels.Labels
	Type   canopyv1.MetricType
	T      int64
	V      float64
}

// ScrapeReport describes one scrape of one target.
type ScrapeReport struct {
	Samples  []ScrapedSample
	Invalid  int // series dropped for invalid names
	Duration time.Duration
	Reason   string // empty on success
	Err      error
}

// Scraper fetches and parses targets. It is safe for concurrent use.
type Scraper struct {
	Client  *http.Client
	Timeout time.Duration
	MaxBody int64
}

// Scrape fetches t once. now stamps samples that carry no timestamp.
func (s *Scraper) Scrape(ctx context.Context, t Target, id Identity, now time.Time) ScrapeReport {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	rep := ScrapeReport{}
	body, contentType, reason, err := s.fetch(ctx, t.URL)
	if err == nil {
		rep.Samples, rep.Invalid, err = Parse(body, contentType, t, id, now.UnixMilli())
		if err != nil {
			reason = ReasonParse
		}
	}
	rep.Duration = time.Since(start)
	rep.Reason, rep.Err = reason, err
	return rep
}

func (s *Scraper) fetch(ctx context.Context, url string) (body []byte, contentType, reason string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", ReasonConnect, err
	}
	req.Header.Set("Accept", acceptHeader)
	req.Header.Set("User-Agent", "canopy-node")
	resp, err := s.Client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, "", ReasonTimeout, err
		}
		return nil, "", ReasonConnect, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, "", ReasonStatus, fmt.Errorf("server returned HTTP status %s", resp.Status)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, s.MaxBody+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, "", ReasonTimeout, err
		}
		return nil, "", ReasonConnect, err
	}
	if int64(len(body)) > s.MaxBody {
		return nil, "", ReasonTooLarge, fmt.Errorf("body exceeds %d bytes", s.MaxBody)
	}
	return body, resp.Header.Get("Content-Type"), "", nil
}

// Parse parses an exposition in the classic text format or OpenMetrics and
// labels every sample for target t of node id. A parse error fails the
// whole scrape, as in Prometheus: a half-read exposition would make series
// flap. Series with names the tree cannot carry are dropped and counted.
func Parse(body []byte, contentType string, t Target, id Identity, defaultTs int64) (samples []ScrapedSample, invalid int, err error) {
	// The text parsers read a NUL byte as end of input and would report a
	// binary body as an empty, successful scrape.
	if i := bytes.IndexByte(body, 0); i >= 0 {
		return nil, 0, fmt.Errorf("body is not text: NUL byte at offset %d", i)
	}
	p, err := textparse.New(body, contentType, nil, textparse.ParserOptions{FallbackContentType: "text/plain"})
	if p == nil {
		return nil, 0, err
	}
	types := map[string]canopyv1.MetricType{}
	var (
		scraped labels.Labels
		lb      = labels.NewBuilder(labels.EmptyLabels())
	)
	for {
		entry, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		switch entry {
		case textparse.EntryType:
			name, typ := p.Type()
			types[string(name)] = metricType(typ)
			continue
		case textparse.EntrySeries:
		default:
			// Help, unit, comments; native histograms are not carried.
			continue
		}
		_, ts, v := p.Series()
		p.Labels(&scraped)
		if !validNames(scraped) {
			invalid++
			continue
		}
		lb.Reset(scraped)
		relabel(lb, scraped, t, id)
		tms := defaultTs
		if ts != nil {
			tms = *ts
		}
		name := scraped.Get(model.MetricNameLabel)
		samples = append(samples, ScrapedSample{Labels: lb.Labels(), Type: familyType(types, name), T: tms, V: v})
	}
	return samples, invalid, nil
}

func relabel(lb *labels.Builder, scraped labels.Labels, t Target, id Identity) {
	for _, name := range reservedLabels {
		if v := scraped.Get(name); v != "" {
			lb.Set("exported_"+name, v)
			lb.Del(name)
		}
	}
	lb.Set(LabelNode, id.Node)
	lb.Set(LabelDC, id.DC)
	lb.Set(LabelLevel, string(t.Level))
	lb.Set(LabelJob, t.Name)
	if t.Level == LevelApp {
		lb.Set(LabelApp, t.App)
	}
	if t.Level == LevelContainer {
		from := t.ContainerLabel
		if from == "" {
			from = LabelContainer
		}
		lb.Set(LabelContainer, scraped.Get(from))
	}
}

func validNames(ls labels.Labels) bool {
	ok := model.IsValidLegacyMetricName(ls.Get(model.MetricNameLabel))
	ls.Range(func(l labels.Label) {
		if l.Name != model.MetricNameLabel && !model.LabelName(l.Name).IsValidLegacy() {
			ok = false
		}
	})
	return ok
}

// familyType finds the declared type of a sample's family: a counter's
// samples end in _total, a histogram's in _bucket, _sum and _count.
func familyType(types map[string]canopyv1.MetricType, name string) canopyv1.MetricType {
	if t, ok := types[name]; ok {
		return t
	}
	for _, suffix := range []string{"_total", "_bucket", "_sum", "_count", "_created", "_info"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if t, ok := types[base]; ok {
				return t
			}
		}
	}
	return canopyv1.MetricType_METRIC_TYPE_UNSPECIFIED
}

func metricType(t model.MetricType) canopyv1.MetricType {
	switch t {
	case model.MetricTypeCounter:
		return canopyv1.MetricType_METRIC_TYPE_COUNTER
	case model.MetricTypeGauge:
		return canopyv1.MetricType_METRIC_TYPE_GAUGE
	case model.MetricTypeSummary:
		return canopyv1.MetricType_METRIC_TYPE_SUMMARY
	case model.MetricTypeHistogram:
		return canopyv1.MetricType_METRIC_TYPE_HISTOGRAM
	case model.MetricTypeGaugeHistogram:
		return canopyv1.MetricType_METRIC_TYPE_GAUGE_HISTOGRAM
	case model.MetricTypeInfo:
		return canopyv1.MetricType_METRIC_TYPE_INFO
	case model.MetricTypeStateset:
		return canopyv1.MetricType_METRIC_TYPE_STATESET
	}
	return canopyv1.MetricType_METRIC_TYPE_UNSPECIFIED
}
