// Command canopyctl queries a canopy root's reader over gRPC.
//
//	canopyctl [--root ADDR] latest node ID
//	canopyctl [--root ADDR] latest dc ID
//	canopyctl [--root ADDR] range node|dc|container|app ID START [END]
//	canopyctl [--root ADDR] range all START [END]
//	canopyctl [--root ADDR] tree
//	canopyctl [--root ADDR] tail TOPIC
//	canopyctl record [--interval 2s] [--duration 3m] URL FILE
//
// --token (env CANOPY_TOKEN) sends a bearer token; --tls, --ca-file,
// --cert-file/--key-file and --server-name reach a root that speaks TLS.
//
// Timestamps are Unix seconds, Unix milliseconds, RFC 3339 or "now"; an
// omitted END means now. Output is OpenMetrics text. record scrapes URL
// every interval and writes a recording (package bench/recording) that the
// bench and tests replay.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/bench/recording"
	"github.com/canopytree/canopy/internal/tlsconfig"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/reader"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "canopyctl:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  canopyctl [--root ADDR] latest node|dc ID
  canopyctl [--root ADDR] range node|dc|container|app ID START [END]
  canopyctl [--root ADDR] range all START [END]
  canopyctl [--root ADDR] tree
  canopyctl [--root ADDR] tail metrics.nodes.{ID|*}|metrics.dc.{ID|*}|tree.ni
  canopyctl record [--interval 2s] [--duration 3m] URL FILE`

func run(args []string, out io.Writer) error {
	flags := pflag.NewFlagSet("canopyctl", pflag.ContinueOnError)
	addr := flags.String("root", envOr("CANOPY_ROOT", "127.0.0.1:7070"), "root gRPC address (env CANOPY_ROOT)")
	timeout := flags.Duration("timeout", 30*time.Second, "request timeout")
	interval := flags.Duration("interval", 2*time.Second, "record: scrape interval")
	duration := flags.Duration("duration", 3*time.Minute, "record: how long to record")
	token := flags.String("token", os.Getenv("CANOPY_TOKEN"), "reader bearer token (env CANOPY_TOKEN)")
	var tc tlsconfig.Config
	flags.BoolVar(&tc.Enabled, "tls", false, "connect with TLS (implied by the other TLS flags)")
	flags.StringVar(&tc.CAFile, "ca-file", "", "CA certificate that verifies the root")
	flags.StringVar(&tc.CertFile, "cert-file", "", "client certificate, for a root that requires one")
	flags.StringVar(&tc.KeyFile, "key-file", "", "client certificate key")
	flags.StringVar(&tc.ServerName, "server-name", "", "name to check the root's certificate against")
	flags.BoolVar(&tc.InsecureSkipVerify, "insecure-skip-verify", false, "do not verify the root's certificate")
	if err := flags.Parse(args); err != nil {
		return err
	}
	args = flags.Args()
	if len(args) == 0 {
		return errors.New(usage)
	}
	if args[0] == "record" {
		if len(args) != 3 {
			return errors.New(usage)
		}
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
		defer cancel()
		return record(ctx, args[1], args[2], *interval, *duration, out)
	}
	creds := insecure.NewCredentials()
	if tc.ClientEnabled() {
		c, err := tc.Client()
		if err != nil {
			return err
		}
		creds = credentials.NewTLS(c)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := canopyv1.NewReaderServiceClient(conn)
	interrupted, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if *token != "" {
		interrupted = metadata.AppendToOutgoingContext(interrupted, "authorization", "Bearer "+*token)
	}
	ctx, cancelTimeout := context.WithTimeout(interrupted, *timeout)
	defer cancelTimeout()

	switch args[0] {
	case "latest":
		if len(args) != 3 {
			return errors.New(usage)
		}
		t, err := parseTarget(args[1], args[2])
		if err != nil {
			return err
		}
		resp, err := client.Latest(ctx, &canopyv1.LatestRequest{Target: t})
		if err != nil {
			return err
		}
		return writeSeries(out, resp.Series)
	case "range":
		var t *canopyv1.Target
		var rest []string
		if len(args) >= 2 && args[1] == "all" {
			t, rest = &canopyv1.Target{}, args[2:]
		} else if len(args) >= 3 {
			if t, err = parseTarget(args[1], args[2]); err != nil {
				return err
			}
			rest = args[3:]
		}
		if t == nil || len(rest) < 1 || len(rest) > 2 {
			return errors.New(usage)
		}
		tr := &canopyv1.TimeRange{Start: rest[0]}
		if len(rest) == 2 {
			tr.End = rest[1]
		}
		stream, err := client.Query(ctx, &canopyv1.QueryRequest{Target: t, TimeRange: tr})
		if err != nil {
			return err
		}
		w := reader.NewOpenMetricsWriter(out)
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return w.Close()
			}
			if err != nil {
				return err
			}
			for _, s := range msg.Series {
				ls, samples := fromProto(s)
				if err := w.Series(ls, samples); err != nil {
					return err
				}
			}
		}
	case "tail":
		if len(args) != 2 {
			return errors.New(usage)
		}
		return tail(interrupted, client, args[1], out) // until interrupted, no timeout
	case "tree":
		resp, err := client.Topology(ctx, &canopyv1.TopologyRequest{})
		if err != nil {
			return err
		}
		return writeTree(out, resp)
	}
	return errors.New(usage)
}

func parseTarget(kind, id string) (*canopyv1.Target, error) {
	switch kind {
	case "node":
		return &canopyv1.Target{NodeId: id}, nil
	case "dc":
		return &canopyv1.Target{DcId: id}, nil
	case "container":
		return &canopyv1.Target{ContainerId: id}, nil
	case "app":
		return &canopyv1.Target{AppId: id}, nil
	}
	return nil, fmt.Errorf("unknown target kind %q: want node, dc, container or app", kind)
}

func fromProto(s *canopyv1.Series) (labels.Labels, []batch.Sample) {
	samples := make([]batch.Sample, len(s.Samples))
	for i, smp := range s.Samples {
		samples[i] = batch.Sample{T: smp.TimestampMs, V: smp.Value}
	}
	return batch.FromProtoLabels(s.Labels), samples
}

func writeSeries(out io.Writer, series []*canopyv1.Series) error {
	w := reader.NewOpenMetricsWriter(out)
	for _, s := range series {
		ls, samples := fromProto(s)
		if err := w.Series(ls, samples); err != nil {
			return err
		}
	}
	return w.Close()
}

func writeTree(out io.Writer, t *canopyv1.TopologyResponse) error {
	children := map[string][]*canopyv1.TopologyNode{}
	for _, n := range t.Nodes {
		children[n.ParentId] = append(children[n.ParentId], n)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tLEVEL\tCHILDREN\tSUBTREE\tCAPACITY\tRTT\tSTATE\tLAST HEARTBEAT\tNI ALL/REACHABLE/DUP")
	fmt.Fprintf(tw, "%s\troot\t0\t%d/%s\t%d\t-\t-\t-\t-\t%s\n", t.Root.Id, t.Root.ChildCount, limit(t.Root.ChildLimit), t.Root.SubtreeSize, imprecision(t.Ni))
	var walk func(parent string, depth int)
	walk = func(parent string, depth int) {
		kids := children[parent]
		sort.Slice(kids, func(i, j int) bool { return kids[i].Node.Id < kids[j].Node.Id })
		for _, n := range kids {
			role := strings.ToLower(strings.TrimPrefix(n.Node.Role.String(), "ROLE_"))
			state := strings.ToLower(strings.TrimPrefix(n.State.String(), "CHILD_STATE_"))
			last := "-"
			if n.LastHeartbeatUnixMs > 0 {
				last = time.Since(time.UnixMilli(n.LastHeartbeatUnixMs)).Round(time.Second).String() + " ago"
			}
			kids := "-"
			if n.Node.Role != canopyv1.Role_ROLE_LEAF {
				kids = fmt.Sprintf("%d/%s", n.Node.ChildCount, limit(n.Node.ChildLimit))
			}
			rtt := "-"
			if n.RttMicros > 0 {
				rtt = (time.Duration(n.RttMicros) * time.Microsecond).String()
			}
			if state != "healthy" {
				state = strings.ToUpper(state) // suspect and dead stand out
			}
			fmt.Fprintf(tw, "%s%s\t%s\t%d\t%s\t%d\t%.1f\t%s\t%s\t%s\t%s\n", strings.Repeat("  ", depth), n.Node.Id, role, depth,
				kids, max(n.Node.SubtreeSize, 1), n.Node.GetCapacity().GetScore(), rtt, state, last, imprecision(n.Ni))
			walk(n.Node.Id, depth+1)
		}
	}
	walk(t.Root.Id, 1)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(t.GroupNi) == 0 {
		return nil
	}
	fmt.Fprintln(out, "\nDC\tNI ALL/REACHABLE/DUP")
	for _, g := range t.GroupNi {
		dc := "-"
		for _, l := range g.Group {
			dc = l.Value
		}
		fmt.Fprintf(out, "%s\t%s\n", dc, imprecision(g.Ni))
	}
	return nil
}

// imprecision prints all/reachable/dup, flagged when an aggregate over it
// cannot be trusted (reachable < all or dup > 0). The root reports it for
// the tree, each dc and each of its own subtrees.
func imprecision(ni *canopyv1.NetworkImprecision) string {
	if ni == nil {
		return "-"
	}
	s := fmt.Sprintf("%d/%d/%d", ni.All, ni.Reachable, ni.Dup)
	if ni.Reachable != ni.All || ni.Dup > 0 {
		s += " IMPRECISE"
	}
	return s
}

func limit(n uint32) string {
	if n == 0 || n >= 1<<31-1 { // the root without a configured limit
		return "∞"
	}
	return fmt.Sprint(n)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// record scrapes url every interval for duration into a recording at path.
func record(ctx context.Context, url, path string, interval, duration time.Duration, log io.Writer) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := recording.NewWriter(f)
	client := &http.Client{Timeout: interval}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.Now().Add(duration)
	frames, bytes := 0, 0
	for now := time.Now(); now.Before(end); {
		frame, err := scrapeOnce(ctx, client, url, now)
		if err != nil {
			f.Close()
			return err
		}
		if err := w.Write(frame); err != nil {
			f.Close()
			return err
		}
		frames, bytes = frames+1, bytes+len(frame.Body)
		select {
		case <-ctx.Done():
			end = now
		case now = <-tick.C:
		}
	}
	if err := w.Close(); err != nil {
		f.Close()
		return err
	}
	fmt.Fprintf(log, "recorded %d scrapes (%d bytes of exposition) into %s\n", frames, bytes, path)
	return f.Close()
}

func scrapeOnce(ctx context.Context, client *http.Client, url string, now time.Time) (recording.Frame, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return recording.Frame{}, err
	}
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
	resp, err := client.Do(req)
	if err != nil {
		return recording.Frame{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return recording.Frame{}, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return recording.Frame{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	return recording.Frame{TimestampMs: now.UnixMilli(), ContentType: resp.Header.Get("Content-Type"), Body: body}, nil
}

// tail prints a topic's updates as they come: each update's series in
// OpenMetrics text, with its imprecision and any updates the root dropped
// because this client read too slowly.
func tail(ctx context.Context, client canopyv1.ReaderServiceClient, topic string, out io.Writer) error {
	stream, err := client.Subscribe(ctx, &canopyv1.SubscribeRequest{Topic: topic})
	if err != nil {
		return err
	}
	for {
		u, err := stream.Recv()
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "# %s", u.Topic)
		if u.Ni != nil {
			fmt.Fprintf(out, " ni=%s", imprecision(u.Ni))
		}
		if u.Dropped > 0 {
			fmt.Fprintf(out, " (%d updates dropped: reading too slowly)", u.Dropped)
		}
		fmt.Fprintln(out)
		if err := writeSeries(out, u.Series); err != nil {
			return err
		}
	}
}
