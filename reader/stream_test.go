package reader

import (
	"testing"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

func update(samples int) *canopyv1.SubscribeResponse {
	s := &canopyv1.Series{}
	for range samples {
		s.Samples = append(s.Samples, &canopyv1.Sample{})
	}
	return &canopyv1.SubscribeResponse{Series: []*canopyv1.Series{s}}
}

// A subscriber that does not read holds at most the sample bound (one
// update always fits an empty buffer); what did not fit is counted for it,
// and reading frees the room.
func TestHubBoundsBufferedSamples(t *testing.T) {
	h := NewHub(10, 250, nil)
	sub, err := h.Subscribe("metrics.nodes.*")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h.Publish(TopicNodes, "n1", update(100)) // 101 samples each, counting the update
	}
	if len(sub.c) != 2 || sub.dropped.Load() != 1 || sub.queued.Load() != 202 {
		t.Fatalf("queued %d updates (%d samples), dropped %d; want 2 (202), 1", len(sub.c), sub.queued.Load(), sub.dropped.Load())
	}
	u := <-sub.Updates()
	sub.queued.Add(-updateSamples(u)) // what follow does
	<-sub.Updates()
	sub.queued.Add(-updateSamples(u))
	h.Publish(TopicNodes, "n1", update(1000))
	if len(sub.c) != 1 {
		t.Fatalf("an update larger than the bound must fit an empty buffer")
	}
	h.Publish(TopicNodes, "n1", update(1))
	if len(sub.c) != 1 || sub.dropped.Load() != 2 {
		t.Fatalf("%d queued, %d dropped", len(sub.c), sub.dropped.Load())
	}
}
