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
// each subscriber has a bounded buffer, and an update that does not fit is
// dropped for that subscriber alone and reported to it (Dropped) with the
// next update it gets. It is safe for concurrent use.
type Hub struct {
	buffer int
	closed chan struct{}
	once   sync.Once

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
}

// Updates delivers the subscriber's updates.
func (s *Subscription) Updates() <-chan *canopyv1.SubscribeResponse { return s.c }

// NewHub gives each subscriber a buffer of buffer updates.
func NewHub(buffer int, reg prometheus.Registerer) *Hub {
	h := &Hub{
		buffer: buffer, subs: map[*Subscription]struct{}{}, closed: make(chan struct{}),
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

// Unsubscribe closes s.
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
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		if s.kind != kind || (s.id != "*" && s.id != id) {
			continue
		}
		select {
		case s.c <- u: // shared, read-only: concurrent marshalling is safe
			h.delivered.Inc()
		default:
			s.dropped.Add(1)
			h.dropped.Inc()
		}
	}
}

// Publisher turns committed samples into updates: each node's samples as
// one update on its node topic, the dc aggregates and dc NI on the dc
// topic, the tree and subtree NI on tree.ni.
func (h *Hub) Publisher() func([]Sample) {
	return func(samples []Sample) {
		if !h.Active() || len(samples) == 0 {
			return
		}
		type group struct {
			kind, id string
			msg      *canopyv1.SubscribeResponse
			series   map[string]*canopyv1.Series
		}
		groups := map[string]*group{}
		var order []*group
		for _, smp := range samples {
			kind, id, ni := route(smp.Labels)
			if kind == "" {
				continue
			}
			key := kind + id
			g, ok := groups[key]
			if !ok {
				topic := kind + id
				g = &group{kind: kind, id: id, msg: &canopyv1.SubscribeResponse{Topic: topic}, series: map[string]*canopyv1.Series{}}
				groups[key] = g
				order = append(order, g)
			}
			if ni != "" {
				if g.msg.Ni == nil {
					g.msg.Ni = &canopyv1.NetworkImprecision{}
				}
				setNI(g.msg.Ni, ni, smp.V)
			}
			lk := smp.Labels.String()
			ser, ok := g.series[lk]
			if !ok {
				ser = &canopyv1.Series{Labels: batch.ToProtoLabels(smp.Labels)}
				g.series[lk] = ser
				g.msg.Series = append(g.msg.Series, ser)
			}
			ser.Samples = append(ser.Samples, &canopyv1.Sample{TimestampMs: smp.T, Value: smp.V})
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
