package supernode

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// ServerOptions are the gRPC server options a parent needs: the message
// size limit, and a stats handler that counts heartbeat bytes as they
// arrive and heartbeats gRPC refused for size before they reached the
// handler.
func (p *Parent) ServerOptions(maxMessageBytes int) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.StatsHandler(&tooLargeCounter{p: p}),
	}
}

// Register adds the parent's TreeService to s.
func (p *Parent) Register(s grpc.ServiceRegistrar) {
	canopyv1.RegisterTreeServiceServer(s, p)
}

type tooLargeCounter struct{ p *Parent }

type methodKey struct{}

func (t *tooLargeCounter) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, methodKey{}, info.FullMethodName)
}

func (t *tooLargeCounter) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if ctx.Value(methodKey{}) != canopyv1.TreeService_Heartbeat_FullMethodName {
		return
	}
	if in, ok := s.(*stats.InPayload); ok {
		t.p.metrics.wireBytes.Add(float64(in.WireLength))
		return
	}
	end, ok := s.(*stats.End)
	if !ok || end.Error == nil {
		return
	}
	// The handler's own ResourceExhausted (child limit) is counted there;
	// only gRPC's size check produces this message.
	if st := status.Convert(end.Error); st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max") {
		t.p.metrics.rejected.WithLabelValues("too_large").Inc()
	}
}

func (t *tooLargeCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (t *tooLargeCounter) HandleConn(context.Context, stats.ConnStats) {}
