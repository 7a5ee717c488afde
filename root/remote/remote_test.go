package remote

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/canopytree/canopy/internal/tlsconfig"
	"github.com/canopytree/canopy/internal/tlsconfig/tlstest"
)

// answer is what the fake sink does with one request.
type answer struct {
	status     int
	retryAfter string
	delay      time.Duration
	reset      bool // close the connection without an answer
}

// fakeSink is a remote-write receiver that misbehaves on purpose: it
// answers requests from a script (then 200s) and records what it
// accepted.
type fakeSink struct {
	*httptest.Server
	mu       sync.Mutex
	script   []answer
	requests int
	headers  []http.Header
	accepted []prompb.WriteRequest
}

func newFakeSink(t *testing.T, script ...answer) *fakeSink {
	f := &fakeSink{script: script}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeSink) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	a := answer{status: http.StatusNoContent}
	if f.requests < len(f.script) {
		a = f.script[f.requests]
	}
	f.requests++
	f.headers = append(f.headers, r.Header.Clone())
	f.mu.Unlock()
	if a.delay > 0 {
		select {
		case <-time.After(a.delay):
		case <-r.Context().Done():
			return
		}
	}
	if a.reset {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if a.status/100 != 2 {
		if a.retryAfter != "" {
			w.Header().Set("Retry-After", a.retryAfter)
		}
		http.Error(w, "scripted failure", a.status)
		return
	}
	body, _ := io.ReadAll(r.Body)
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		http.Error(w, "not snappy", http.StatusBadRequest)
		return
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		http.Error(w, "not a WriteRequest", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.accepted = append(f.accepted, req)
	f.mu.Unlock()
	w.WriteHeader(a.status)
}

// seen returns what the sink saw so far.
func (f *fakeSink) seen() (requests int, headers []http.Header, accepted []prompb.WriteRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests, append([]http.Header(nil), f.headers...), append([]prompb.WriteRequest(nil), f.accepted...)
}

func samples() []Sample {
	ls := labels.FromStrings("__name__", "up", "node", "n1", "zone", "")
	return []Sample{
		{Labels: ls, T: 1000, V: 1},
		{Labels: labels.FromStrings("__name__", "load", "node", "n1", "canopy_root", "mine"), T: 1000, V: 0.5},
		{Labels: ls, T: 2000, V: math.Float64frombits(value.StaleNaN)},
	}
}

// sleeps records the waits the sender asked for instead of waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func testSender(t *testing.T, url string, cfg ClientConfig) (*sender, *Metrics, *sleeps) {
	t.Helper()
	cfg.URL = url
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(prometheus.NewRegistry())
	sl := &sleeps{}
	return newSender("sink", c, RetryConfig{MinBackoff: 30 * time.Millisecond, MaxBackoff: 5 * time.Second, Sleep: sl.sleep}, m), m, sl
}

func encode(t *testing.T, s []Sample) []byte {
	t.Helper()
	body, err := NewEncoder(labels.FromStrings("canopy_root", "a")).Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), body...)
}

// The request is remote write 1.0: headers, snappy, sorted labels without
// empty values, external labels (a series' own label wins), one
// TimeSeries per series with its samples in order, staleness markers
// kept bit for bit.
func TestWireFormat(t *testing.T) {
	sink := newFakeSink(t)
	s, m, _ := testSender(t, sink.URL, ClientConfig{Auth: Auth{BearerToken: "tok"}, Headers: map[string]string{"X-Scope-OrgID": "tenant-1"}})
	if err := s.deliver(context.Background(), encode(t, samples()), 3); err != nil {
		t.Fatal(err)
	}
	_, headers, accepted := sink.seen()
	h := headers[0]
	for k, want := range map[string]string{
		"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf", "User-Agent": UserAgent,
		"X-Prometheus-Remote-Write-Version": "0.1.0", "Authorization": "Bearer tok", "X-Scope-Orgid": "tenant-1",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	ts := accepted[0].Timeseries
	if len(ts) != 2 {
		t.Fatalf("%d series, want 2", len(ts))
	}
	if got := labelString(ts[0].Labels); got != "__name__=up,canopy_root=a,node=n1" {
		t.Errorf("labels %s", got)
	}
	if got := labelString(ts[1].Labels); got != "__name__=load,canopy_root=mine,node=n1" {
		t.Errorf("labels %s (the series' own canopy_root must win)", got)
	}
	if len(ts[0].Samples) != 2 || ts[0].Samples[0].Timestamp != 1000 || !value.IsStaleNaN(ts[0].Samples[1].Value) {
		t.Errorf("samples %v", ts[0].Samples)
	}
	if got := testutil.ToFloat64(m.sent.WithLabelValues("sink")); got != 3 {
		t.Errorf("sent %g", got)
	}
	// Out-of-order samples of one series are a bug upstream, not a request.
	if _, err := NewEncoder(labels.EmptyLabels()).Encode([]Sample{samples()[2], samples()[0]}); err == nil {
		t.Error("out-of-order samples encoded")
	}
}

func labelString(ls []prompb.Label) string {
	var b []string
	for _, l := range ls {
		b = append(b, l.Name+"="+l.Value)
	}
	return strings.Join(b, ",")
}

func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		name      string
		script    []answer
		timeout   time.Duration
		err       error
		requests  int
		dropped   string
		minWaits  []time.Duration
		basicAuth bool
	}{
		{name: "5xx retried", script: []answer{{status: 500}, {status: 503}}, requests: 3},
		{name: "429 honours Retry-After seconds", script: []answer{{status: 429, retryAfter: "7"}}, requests: 2, minWaits: []time.Duration{7 * time.Second}},
		{name: "503 honours Retry-After date", script: []answer{{status: 503, retryAfter: time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)}}, requests: 2, minWaits: []time.Duration{80 * time.Second}},
		{name: "400 never retried", script: []answer{{status: 400}}, requests: 1, err: ErrDropped, dropped: "400"},
		{name: "401 never retried", script: []answer{{status: 401}}, requests: 1, err: ErrDropped, dropped: "401", basicAuth: true},
		{name: "slow answer retried", script: []answer{{delay: 300 * time.Millisecond, status: 204}}, timeout: 50 * time.Millisecond, requests: 2},
		{name: "connection reset retried", script: []answer{{reset: true}, {reset: true}}, requests: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newFakeSink(t, tc.script...)
			cfg := ClientConfig{Timeout: tc.timeout}
			if tc.basicAuth {
				cfg.Auth = Auth{Username: "u", Password: "p"}
			}
			s, m, sl := testSender(t, sink.URL, cfg)
			err := s.deliver(context.Background(), encode(t, samples()), 3)
			if !errors.Is(err, tc.err) {
				t.Fatalf("deliver: %v, want %v", err, tc.err)
			}
			requests, headers, accepted := sink.seen()
			if requests != tc.requests {
				t.Errorf("%d requests, want %d", requests, tc.requests)
			}
			retries := tc.requests - 1
			if tc.err != nil {
				retries = 0
			}
			if got := testutil.ToFloat64(m.retried.WithLabelValues("sink")); got != float64(3*retries) {
				t.Errorf("retried %g samples, want %d", got, 3*retries)
			}
			if len(sl.d) != retries {
				t.Errorf("waited %d times, want %d", len(sl.d), retries)
			}
			for i, d := range sl.d {
				if d < 15*time.Millisecond || d > 5*time.Second && (i >= len(tc.minWaits)) {
					t.Errorf("wait %d = %s, outside the backoff bounds", i, d)
				}
				if i < len(tc.minWaits) && d < tc.minWaits[i] {
					t.Errorf("wait %d = %s, shorter than Retry-After %s", i, d, tc.minWaits[i])
				}
			}
			if tc.dropped != "" {
				if got := testutil.ToFloat64(m.dropped.WithLabelValues("sink", tc.dropped)); got != 3 {
					t.Errorf("dropped{reason=%s} = %g, want 3", tc.dropped, got)
				}
				if got := testutil.ToFloat64(m.sent.WithLabelValues("sink")); got != 0 {
					t.Errorf("sent %g after a refusal", got)
				}
			} else if len(accepted) != 1 {
				t.Errorf("sink accepted %d requests, want 1", len(accepted))
			}
			if tc.basicAuth {
				if u, p, ok := (&http.Request{Header: headers[0]}).BasicAuth(); !ok || u != "u" || p != "p" {
					t.Errorf("basic auth %q %q %v", u, p, ok)
				}
			}
		})
	}
}

// A sender told to stop while the sink is failing owes the samples: they
// are neither counted as sent nor as dropped.
func TestStopWhileRetrying(t *testing.T) {
	sink := newFakeSink(t, answer{status: 500}, answer{status: 500}, answer{status: 500})
	s, m, _ := testSender(t, sink.URL, ClientConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	s.retry.Sleep = func(ctx context.Context, d time.Duration) error {
		if calls++; calls == 2 {
			cancel()
		}
		return ctx.Err()
	}
	if err := s.deliver(ctx, encode(t, samples()), 3); !errors.Is(err, context.Canceled) {
		t.Fatalf("deliver: %v", err)
	}
	if testutil.ToFloat64(m.sent.WithLabelValues("sink")) != 0 || testutil.CollectAndCount(m.dropped) != 0 {
		t.Fatal("samples owed were counted as sent or dropped")
	}
}

func TestRelabel(t *testing.T) {
	r := Relabel{
		Keep: [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchRegexp, "__name__", "node_.*|dc:.*")}},
		Drop: [][]*labels.Matcher{{labels.MustNewMatcher(labels.MatchEqual, "device", "lo")}},
	}
	for ls, want := range map[string]bool{
		`{__name__="node_load1"}`:                                    true,
		`{__name__="dc:node_memory_MemTotal_bytes:sum"}`:             true,
		`{__name__="up"}`:                                            false,
		`{__name__="node_network_receive_bytes_total", device="lo"}`: false,
	} {
		if got := r.Sends(labels.FromMap(parse(t, ls))); got != want {
			t.Errorf("%s: sends %v, want %v", ls, got, want)
		}
	}
}

func parse(t *testing.T, s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(strings.Trim(s, "{}"), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		out[k] = strings.Trim(v, `"`)
	}
	return out
}

// TLS: the sink's CA from a file; certificate options that cannot work
// fail at startup.
func TestTLS(t *testing.T) {
	var got int
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { got++; w.WriteHeader(204) }))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _, _ := testSender(t, srv.URL, ClientConfig{TLS: tlsconfig.Config{CAFile: ca}})
	if err := s.deliver(context.Background(), encode(t, samples()), 3); err != nil || got != 1 {
		t.Fatalf("TLS send: %v (%d requests)", err, got)
	}
	for _, bad := range []ClientConfig{
		{TLS: tlsconfig.Config{CAFile: filepath.Join(t.TempDir(), "missing.pem")}},
		{TLS: tlsconfig.Config{CertFile: ca}},
		{Auth: Auth{Username: "u", BearerToken: "t"}},
	} {
		if _, err := NewClient(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// A sink that requires a client certificate (mutual TLS) accepts the
// configured one and refuses a client without it.
func TestMutualTLS(t *testing.T) {
	pki := tlstest.New(t)
	pair, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pki.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()

	s, m, _ := testSender(t, srv.URL, ClientConfig{TLS: tlsconfig.Config{CAFile: pki.CAFile, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}})
	if err := s.deliver(context.Background(), encode(t, samples()), 3); err != nil || testutil.ToFloat64(m.sent.WithLabelValues("sink")) != 3 {
		t.Fatalf("with the client certificate: %v", err)
	}
	c, err := NewClient(ClientConfig{URL: srv.URL, Timeout: time.Second, TLS: tlsconfig.Config{CAFile: pki.CAFile}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(context.Background(), encode(t, samples()), time.Now()); err == nil {
		t.Fatal("a client without a certificate got through")
	}
}
