package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/internal/tlsconfig"
	"github.com/canopytree/canopy/internal/tlsconfig/tlstest"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/root"
)

// startRoot runs a real root on loopback holding one sample of node n1;
// adjust, when given, changes its options.
func startRoot(t *testing.T, adjust ...func(*root.Options)) string {
	t.Helper()
	opts := root.Options{
		ID: "root", DataDir: t.TempDir(), Retention: time.Hour, Window: time.Second,
		MaxMessageBytes: 1 << 20, ForgetAfter: time.Minute,
		Ingest: root.IngestConfig{MaxAge: time.Hour, MaxFuture: time.Minute},
	}
	for _, f := range adjust {
		f(&opts)
	}
	r, err := root.Open(opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	err = r.Ingester.Accept(context.Background(), "n1", []batch.Batch{{
		ID: batch.ID{Origin: "n1", Epoch: 1, Seq: 1},
		Series: []batch.Series{
			{Labels: labels.FromStrings("__name__", "up", "node", "n1", "dc", "eu-1"), Samples: []batch.Sample{{T: now - 1000, V: 1}}},
			{Labels: labels.FromStrings("__name__", "node_cpu_seconds_total", "node", "n1", "dc", "eu-1", "cpu", "0"), Samples: []batch.Sample{{T: now - 2000, V: 3}, {T: now - 1000, V: 4.5}}},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := net.Listen("tcp", "127.0.0.1:0")
	h, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Serve(ctx, g, h); close(done) }()
	t.Cleanup(func() { cancel(); <-done; r.Close() })
	roots[g.Addr().String()] = r
	return g.Addr().String()
}

// roots maps a started root's address to it, for tests that feed it.
var roots = map[string]*root.Root{}

func TestCommands(t *testing.T) {
	addr := startRoot(t)
	for _, tc := range []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"latest", "node", "n1"}, []string{`up{dc="eu-1",node="n1"} 1 `, "# EOF"}, []string{"node_cpu_seconds_total"}},
		{[]string{"range", "node", "n1", "0", "now"}, []string{`node_cpu_seconds_total{cpu="0",dc="eu-1",node="n1"} 3 `, `node_cpu_seconds_total{cpu="0",dc="eu-1",node="n1"} 4.5 `}, nil},
		{[]string{"range", "all", "0"}, []string{"# TYPE up unknown"}, nil},
		{[]string{"tree"}, []string{"root", "NODE"}, nil},
	} {
		var out bytes.Buffer
		if err := run(append([]string{"--root", addr}, tc.args...), &out); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, out.String())
			}
		}
		for _, w := range tc.not {
			if strings.Contains(out.String(), w) {
				t.Errorf("%v: output has %q", tc.args, w)
			}
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"latest", "node", "ghost"}, `unknown node "ghost"`},
		{[]string{"range", "node", "n1", "later"}, "start: timestamp"},
		{[]string{"latest", "rack", "r1"}, "unknown target kind"},
		{[]string{"frobnicate"}, "usage"},
	} {
		err := run(append([]string{"--root", addr}, tc.args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestTreeShowsImprecision(t *testing.T) {
	ni := func(all, reach, dup uint64) *canopyv1.NetworkImprecision {
		return &canopyv1.NetworkImprecision{All: all, Reachable: reach, Dup: dup}
	}
	top := &canopyv1.TopologyResponse{
		Root: &canopyv1.NodeInfo{Id: "root", ChildCount: 2},
		Ni:   ni(5, 4, 1),
		Nodes: []*canopyv1.TopologyNode{
			{Node: &canopyv1.NodeInfo{Id: "s1", Role: canopyv1.Role_ROLE_SUPERNODE}, ParentId: "root", State: canopyv1.ChildState_CHILD_STATE_HEALTHY, Ni: ni(3, 3, 0)},
			{Node: &canopyv1.NodeInfo{Id: "s2", Role: canopyv1.Role_ROLE_SUPERNODE}, ParentId: "root", State: canopyv1.ChildState_CHILD_STATE_SUSPECT, Ni: ni(2, 1, 1)},
		},
		GroupNi: []*canopyv1.GroupImprecision{{Group: []*canopyv1.Label{{Name: "dc", Value: "eu-1"}}, Ni: ni(5, 4, 1)}},
	}
	var out bytes.Buffer
	if err := writeTree(&out, top); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"NI ALL/REACHABLE/DUP", "5/4/1 IMPRECISE", "3/3/0\n", "2/1/1 IMPRECISE", "eu-1\t5/4/1 IMPRECISE"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("tree output lacks %q:\n%s", w, out.String())
		}
	}
}

// tail prints a topic's updates as they come; it ends when the root does.
func TestTail(t *testing.T) {
	addr := startRoot(t)
	r := roots[addr]
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- run([]string{"--root", addr, "tail", "metrics.nodes.*"}, &out) }()
	for r.Hub.Subscribers() == 0 {
		time.Sleep(5 * time.Millisecond) // the subscription travels over a real socket
	}
	now := time.Now().UnixMilli()
	if err := r.Ingester.Accept(context.Background(), "n9", []batch.Batch{{
		ID:     batch.ID{Origin: "n9", Epoch: 1, Seq: 1},
		Series: []batch.Series{{Labels: labels.FromStrings("__name__", "up", "node", "n9", "dc", "eu-1"), Samples: []batch.Sample{{T: now, V: 1}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), `up{dc="eu-1",node="n9"} 1`) {
		time.Sleep(5 * time.Millisecond)
	}
	r.Hub.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "# metrics.nodes.n9\n") {
		t.Fatalf("tail output:\n%s", out.String())
	}
	if err := run([]string{"--root", addr, "tail", "metrics.racks.1"}, &out); err == nil || !strings.Contains(err.Error(), "unknown topic") {
		t.Fatalf("bad topic: %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A root with TLS and a reader token: canopyctl reaches it with the CA and
// the token, and is refused, with the reason, without either.
func TestTokenAndTLS(t *testing.T) {
	pki := tlstest.New(t)
	addr := startRoot(t, func(o *root.Options) {
		tc, err := tlsconfig.Config{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}.Server()
		if err != nil {
			t.Fatal(err)
		}
		o.TLS = tc
		o.Reader.BearerToken = "s3cret"
	})
	var out bytes.Buffer
	if err := run([]string{"--root", addr, "--ca-file", pki.CAFile, "--token", "s3cret", "latest", "node", "n1"}, &out); err != nil {
		t.Fatalf("with CA and token: %v", err)
	}
	if !strings.Contains(out.String(), `up{dc="eu-1",node="n1"} 1`) {
		t.Fatalf("answer:\n%s", out.String())
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--root", addr, "--ca-file", pki.CAFile, "latest", "node", "n1"}, "requires a bearer token"},
		{[]string{"--root", addr, "--ca-file", pki.CAFile, "--token", "wrong", "latest", "node", "n1"}, "invalid bearer token"},
		{[]string{"--root", addr, "--tls", "--token", "s3cret", "--timeout", "2s", "latest", "node", "n1"}, "certificate"},
		{[]string{"--root", addr, "--token", "s3cret", "--timeout", "2s", "latest", "node", "n1"}, "Unavailable"},
	} {
		err := run(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}
