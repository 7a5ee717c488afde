package leaf

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/internal/grpcsnappy"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Uplink is a node's heartbeat channel to its parent: it owns the series
// dictionary session and re-establishes it when the parent lost it. It is
// not safe for concurrent use; the agent serialises it.
type Uplink struct {
	client      canopyv1.TreeServiceClient
	enc         *batch.Encoder
	nextSession func() uint64
	// onReset runs whenever a new session starts (new parent, or one that
	// lost its state): the parent's caches of our series are empty.
	onReset func()
}

// NewUplink speaks to a parent over conn. nextSession yields fresh session
// ids (a restarted parent must never see an old id reused).
func NewUplink(conn grpc.ClientConnInterface, maxRefs int, nextSession func() uint64) *Uplink {
	return &Uplink{
		client:      canopyv1.NewTreeServiceClient(conn),
		enc:         batch.NewEncoder(nextSession(), maxRefs),
		nextSession: nextSession,
	}
}

// Send delivers one heartbeat. status is the sender's own part of the
// request (node info, aggregates, NI, children); Send adds the dictionary
// and batches. If the parent reports that it lost the session, Send starts a
// new one and tries once more.
func (u *Uplink) Send(ctx context.Context, status *canopyv1.HeartbeatRequest, batches []*batch.Batch) (*canopyv1.HeartbeatResponse, error) {
	for attempt := 0; ; attempt++ {
		req := cloneStatus(status)
		defined := u.enc.Encode(req, batches, u.nextSession())
		resp, err := u.client.Heartbeat(ctx, req, grpc.UseCompressor(grpcsnappy.Name))
		if err == nil {
			u.enc.Confirm(defined)
			return resp, nil
		}
		if isSessionLost(err) && attempt == 0 {
			u.reset()
			continue
		}
		return nil, err
	}
}

// Retarget points the uplink at a new parent: a new connection and a new
// dictionary session.
func (u *Uplink) Retarget(conn grpc.ClientConnInterface) {
	u.client = canopyv1.NewTreeServiceClient(conn)
	u.reset()
}

func (u *Uplink) reset() {
	u.enc.Reset(u.nextSession())
	if u.onReset != nil {
		u.onReset()
	}
}

func cloneStatus(s *canopyv1.HeartbeatRequest) *canopyv1.HeartbeatRequest {
	return &canopyv1.HeartbeatRequest{
		Node: s.Node, Aggregates: s.Aggregates, Ni: s.Ni, GroupNi: s.GroupNi,
		Children: s.Children, ConfigVersion: s.ConfigVersion, Moved: s.Moved,
	}
}

func isSessionLost(err error) bool {
	return status.Code(err) == codes.FailedPrecondition
}

// IsRejected reports whether the parent refused the heartbeat's content
// (invalid or over a limit): sending the same batches again cannot succeed.
func IsRejected(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.ResourceExhausted:
		return true
	}
	return false
}

// ErrNoParent is returned when a node has no parent to send to.
var ErrNoParent = errors.New("no parent configured")
