package reader

import (
	"context"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	gatewayv1 "github.com/canopytree/canopy/proto/gateway/canopy/v1"
)

// Gateway is the REST face of the reader. It calls the ReaderService over
// a real ClientConn (the in-process handler cannot stream).
func Gateway(ctx context.Context, conn *grpc.ClientConn) (http.Handler, error) {
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &bodyMarshaler{
		HTTPBodyMarshaler: runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}},
	}))
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		gatewayv1.RegisterReaderServiceHandler,
	} {
		if err := register(ctx, mux, conn); err != nil {
			return nil, err
		}
	}
	return mux, nil
}

// bodyMarshaler writes streamed HttpBody chunks back to back: they are
// pieces of one document (OpenMetrics text, JSON), so the gateway's default
// newline between stream messages would corrupt it.
type bodyMarshaler struct {
	runtime.HTTPBodyMarshaler
}

func (*bodyMarshaler) Delimiter() []byte { return nil }
