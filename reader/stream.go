package reader

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Topics a client can subscribe to. An update has a concrete topic; a
// subscription may use * for the id.
const (
	TopicNodes = "metrics.nodes." // + node id: every batch the root stores for the node
	TopicDC    = "metrics.dc."    // + dc id: the dc's aggregates and NI, once per window
	TopicNI    = "tree.ni"        // the tree's and each root subtree's NI, once per window
)

// Hub fans updates out to subscribers by topic. Publishing never blocks:
// each subscriber has a buffer bounded in updates and in samples, and an
// update that does not fit is dropped for that subscriber alone and
// reported to it (Dropped) with the next update it gets. The sample bound
// caps the memory a stalled subscriber holds (and the garbage collector
// scans) whatever the size of the updates. It is safe for concurrent use.
type Hub struct {
	buffer        int
	bufferSamples int64
	closed        chan struct{}
	once          sync.Once

	mu   sync.RWMutex
	subs map[*Subscription]struct{}
	n    atomic.Int64 // len(subs), read without the lock on the hot path

	delivered, dropped prometheus.Counter
	subscribers        prometheus.Gauge
}

// Subscription is one subscriber's topic and buffer.
type Subscription struct {
	kind, id string // id "*" matches every id
	c        chan *canopyv1.SubscribeResponse
	dropped  atomic.Uint64
	queued   atomic.Int64 // samples in c
}

// Updates delivers the subscriber's updates.
func (s *Subscription) Updates() <-chan *canopyv1.SubscribeResponse { return s.c }

// NewHub gives each subscriber a buffer of up to buffer updates holding
// up to bufferSamples samples (0: no sample bound); one update is always
// let in to an empty buffer, however large.
func NewHub(buffer, bufferSamples int, reg prometheus.Registerer) *Hub {
	h := &Hub{
		buffer: buffer, bufferSamples: int64(bufferSamples), subs: map[*Subscription]struct{}{}, closed: make(chan struct{}),
		delivered:   prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_reader_stream_updates_total", Help: "Updates queued to stream subscribers."}),
		dropped:     prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_reader_stream_dropped_updates_total", Help: "Updates dropped for subscribers that read too slowly."}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_reader_stream_subscribers", Help: "Open stream subscriptions."}),
	}
	if reg != nil {
		reg.MustRegister(h.delivered, h.dropped, h.subscribers)
	}
	return h
}

// parseTopic splits a topic into its kind and id.
func parseTopic(topic string) (kind, id string, err error) {
	switch {
	case topic == TopicNI:
		return TopicNI, "", nil
	case strings.HasPrefix(topic, TopicNodes) && len(topic) > len(TopicNodes):
		return TopicNodes, topic[len(TopicNodes):], nil
	case strings.HasPrefix(topic, TopicDC) && len(topic) > len(TopicDC):
		return TopicDC, topic[len(TopicDC):], nil
	}
	return "", "", status.Errorf(codes.InvalidArgument, "unknown topic %q: want metrics.nodes.{id|*}, metrics.dc.{id|*} or tree.ni", topic)
}

// Subscribe opens a subscription to topic.
func (h *Hub) Subscribe(topic string) (*Subscription, error) {
	kind, id, err := parseTopic(topic)
	if err != nil {
		return nil, err
	}
	s := &Subscription{kind: kind, id: id, c: make(chan *canopyv1.SubscribeResponse, h.buffer)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.n.Store(int64(len(h.subs)))
	h.mu.Unlock()
	h.subscribers.Inc()
	return s, nil
}

// Unsubscribe stops deliveries to s; its channel stays open (a publisher
// may be sending to it).
func (h *Hub) Unsubscribe(s *Subscription) {
	h.mu.Lock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		h.n.Store(int64(len(h.subs)))
		h.subscribers.Dec()
	}
	h.mu.Unlock()
}

// Close ends every subscription's stream (the server is shutting down).
func (h *Hub) Close() { h.once.Do(func() { close(h.closed) }) }

// Subscribers is how many subscriptions are open.
func (h *Hub) Subscribers() int { return int(h.n.Load()) }

// Active reports whether anyone listens (publishers skip building updates
// otherwise).
func (h *Hub) Active() bool { return h.n.Load() > 0 }

// Publish hands u (topic of kind kind for id) to every matching
// subscriber without blocking.
func (h *Hub) Publish(kind, id string, u *canopyv1.SubscribeResponse) {
	n := updateSamples(u)
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		if s.kind != kind || (s.id != "*" && s.id != id) {
			continue
		}
		if q := s.queued.Add(n); h.bufferSamples > 0 && q > n && q > h.bufferSamples {
			s.queued.Add(-n)
			s.dropped.Add(1)
			h.dropped.Inc()
			continue
		}
		select {
		case s.c <- u: // shared, read-only: concurrent marshalling is safe
			h.delivered.Inc()
		default:
			s.queued.Add(-n)
			s.dropped.Add(1)
			h.dropped.Inc()
		}
	}
}

// updateSamples is how many samples an update carries (at least 1, so
// sample-less NI updates count too).
func updateSamples(u *canopyv1.SubscribeResponse) int64 {
	n := int64(1)
	for _, s := range u.Series {
		n += int64(len(s.Samples))
	}
	return n
}

// wants reports whether any subscriber follows the topic.
func (h *Hub) wants(kind, id string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		if s.kind == kind && (s.id == "*" || s.id == id) {
			return true
		}
	}
	return false
}

// Publisher turns committed samples into updates: each node's samples as
// one update on its node topic, the dc aggregates and dc NI on the dc
// topic, the tree and subtree NI on tree.ni. It runs on every commit, so
// it routes each series once (a commit holds a series' samples back to
// back) and allocates the samples of an update in one slab.
func (h *Hub) Publisher() func([]Sample) {
	type topic struct{ kind, id string }
	type group struct {
		topic
		msg *canopyv1.SubscribeResponse
	}
	type series struct {
		ls  labels.Labels
		g   *group // nil: nobody follows the series' topic
		ser *canopyv1.Series
		ni  string // the NI count the series carries for its update
	}
	return func(samples []Sample) {
		if !h.Active() || len(samples) == 0 {
			return
		}
		var (
			groups = map[topic]*group{} // nil for topics nobody follows
			order  []*group
			byHash = map[uint64][]*series{} // followed series seen in the commit
			slab   []canopyv1.Sample
			other  series // the current series when nobody follows it
			cur    = &other
		)
		for i, smp := range samples {
			if i == 0 || !labels.Equal(smp.Labels, cur.ls) {
				other = series{ls: smp.Labels}
				cur = &other
				kind, id, ni := route(smp.Labels)
				if kind == "" {
					continue
				}
				t := topic{kind, id}
				g, seen := groups[t]
				if !seen {
					if h.wants(kind, id) {
						g = &group{topic: t, msg: &canopyv1.SubscribeResponse{Topic: kind + id}}
						order = append(order, g)
					}
					groups[t] = g
				}
				if g == nil {
					continue
				}
				// A commit of several batches holds a series more than once.
				hash := smp.Labels.Hash()
				known := false
				for _, s := range byHash[hash] {
					if labels.Equal(s.ls, smp.Labels) {
						cur, known = s, true
						break
					}
				}
				if !known {
					if ni != "" && g.msg.Ni == nil {
						g.msg.Ni = &canopyv1.NetworkImprecision{}
					}
					cur = &series{ls: smp.Labels, g: g, ni: ni, ser: &canopyv1.Series{Labels: batch.ToProtoLabels(smp.Labels)}}
					g.msg.Series = append(g.msg.Series, cur.ser)
					byHash[hash] = append(byHash[hash], cur)
				}
			}
			if cur.g == nil {
				continue
			}
			if cur.ni != "" {
				setNI(cur.g.msg.Ni, cur.ni, smp.V) // the series' last sample wins
			}
			if slab == nil {
				slab = make([]canopyv1.Sample, len(samples)-i)
			}
			sp := &slab[0]
			slab = slab[1:]
			sp.TimestampMs, sp.Value = smp.T, smp.V
			cur.ser.Samples = append(cur.ser.Samples, sp)
		}
		for _, g := range order {
			h.Publish(g.kind, g.id, g.msg)
		}
	}
}

// Sample is one committed sample.
type Sample = batch.LabeledSample

// route picks the topic of a stored series, and for the NI series that
// qualify the whole update, which count it is.
func route(ls labels.Labels) (kind, id, ni string) {
	name := ls.Get(labels.MetricName)
	scope := ls.Get("scope")
	switch {
	case strings.HasPrefix(name, "canopy_ni_") && (scope == "tree" || scope == "subtree"):
		if scope == "tree" {
			ni = name
		}
		return TopicNI, "", ni
	case strings.HasPrefix(name, "canopy_ni_") && ls.Get("dc") != "":
		if scope == "group" {
			ni = name
		}
		return TopicDC, ls.Get("dc"), ni
	case strings.HasPrefix(name, "dc:") && ls.Get("dc") != "":
		return TopicDC, ls.Get("dc"), ""
	case ls.Get("node") != "":
		return TopicNodes, ls.Get("node"), ""
	}
	return "", "", ""
}

func setNI(ni *canopyv1.NetworkImprecision, name string, v float64) {
	switch name {
	case "canopy_ni_all":
		ni.All = uint64(v)
	case "canopy_ni_reachable":
		ni.Reachable = uint64(v)
	case "canopy_ni_dup":
		ni.Dup = uint64(v)
	}
}

// Subscribe streams the updates of a topic until the client goes away.
func (s *Service) Subscribe(req *canopyv1.SubscribeRequest, stream canopyv1.ReaderService_SubscribeServer) error {
	return s.follow(stream.Context(), req.Topic, stream.Send)
}

// SubscribeEvents is Subscribe as server-sent events: one "update" event
// per update, its data the update as JSON.
func (s *Service) SubscribeEvents(req *canopyv1.SubscribeEventsRequest, stream canopyv1.ReaderService_SubscribeEventsServer) error {
	// An empty first chunk sends the headers at once, so a client knows
	// it is subscribed before the first update.
	if err := stream.Send(&httpbody.HttpBody{ContentType: "text/event-stream", Data: []byte(": subscribed to " + req.Topic + "\n\n")}); err != nil {
		return err
	}
	return s.follow(stream.Context(), req.Topic, func(u *canopyv1.SubscribeResponse) error {
		js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(u)
		if err != nil {
			return err
		}
		data := make([]byte, 0, len(js)+24)
		data = append(data, "event: update\ndata: "...)
		data = append(data, js...)
		data = append(data, "\n\n"...)
		return stream.Send(&httpbody.HttpBody{ContentType: "text/event-stream", Data: data})
	})
}

func (s *Service) follow(ctx context.Context, topic string, send func(*canopyv1.SubscribeResponse) error) error {
	if s.cfg.Hub == nil {
		return status.Error(codes.Unavailable, "this reader has no stream")
	}
	sub, err := s.cfg.Hub.Subscribe(topic)
	if err != nil {
		return err
	}
	defer s.cfg.Hub.Unsubscribe(sub)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.cfg.Hub.closed:
			return nil
		case u := <-sub.Updates():
			sub.queued.Add(-updateSamples(u))
			if d := sub.dropped.Swap(0); d > 0 {
				// Tell this subscriber what it missed; the update itself
				// is shared with the others and stays untouched.
				u = proto.Clone(u).(*canopyv1.SubscribeResponse)
				u.Dropped = d
			}
			if err := send(u); err != nil {
				return err
			}
		}
	}
}
