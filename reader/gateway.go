package reader

import (
	"context"
	"fmt"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	gatewayv1 "github.com/canopytree/canopy/proto/gateway/canopy/v1"
)

// Gateway is the REST face of the reader. It calls the ReaderService over
// a real ClientConn (the in-process handler cannot stream). With an
// authenticator, a request without the bearer token is refused here, 401
// with a WWW-Authenticate challenge, before it reaches the service; the
// token goes on to the service as gRPC metadata.
func Gateway(ctx context.Context, conn *grpc.ClientConn, auth *Authenticator) (http.Handler, error) {
	marshaler := &bodyMarshaler{
		HTTPBodyMarshaler: runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}},
	}
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler))
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		gatewayv1.RegisterReaderServiceHandler,
	} {
		if err := register(ctx, mux, conn); err != nil {
			return nil, err
		}
	}
	if auth == nil {
		return mux, nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authorization := r.Header.Get("Authorization")
		if err := auth.Check(authorization); err != nil {
			unauthorized(w, marshaler, authorization != "", err)
			return
		}
		mux.ServeHTTP(w, r)
	}), nil
}

// unauthorized answers 401 with an RFC 6750 challenge and the error in the
// body the gateway gives every error.
func unauthorized(w http.ResponseWriter, m runtime.Marshaler, presented bool, err error) {
	st := status.Convert(err)
	challenge := `Bearer realm="canopy"`
	if presented {
		challenge += fmt.Sprintf(`, error="invalid_token", error_description=%q`, st.Message())
	}
	body, merr := m.Marshal(st.Proto())
	if merr != nil {
		body = []byte(st.Message())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("WWW-Authenticate", challenge)
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(body)
}

// bodyMarshaler writes streamed HttpBody chunks back to back: they are
// pieces of one document (OpenMetrics text, JSON), so the gateway's default
// newline between stream messages would corrupt it.
type bodyMarshaler struct {
	runtime.HTTPBodyMarshaler
}

func (*bodyMarshaler) Delimiter() []byte { return nil }
