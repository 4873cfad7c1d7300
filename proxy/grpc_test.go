package proxy

// gRPC through Portico: a real google.golang.org/grpc server behind an
// h2c:// pool, a real gRPC client over TLS and HTTP/2 to Portico. Unary,
// server-, client- and bidirectional streaming; status codes and trailers
// passed; deadlines carried; nothing buffered; a cancelled call reaches
// the server.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/portico-proxy/portico/config"
)

// rawCodec sends []byte messages as they are: no generated code needed.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "raw" }

// echoService is the test's gRPC service.
type echoService struct {
	sent      chan struct{} // the server stream's first message is out
	proceed   chan struct{} // lets the server stream finish
	cancelled chan struct{} // the bidi stream saw its call cancelled
	deadline  chan time.Duration
}

func (e *echoService) desc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "test.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Unary", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				var in []byte
				if err := dec(&in); err != nil {
					return nil, err
				}
				if d, ok := ctx.Deadline(); ok {
					e.deadline <- time.Until(d)
				}
				grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", "t1"))
				if string(in) == "fail" {
					return nil, status.Error(codes.FailedPrecondition, "asked to fail")
				}
				out := append([]byte("echo:"), in...)
				return &out, nil
			}},
		},
		Streams: []grpc.StreamDesc{
			{StreamName: "Server", ServerStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
				var in []byte
				if err := s.RecvMsg(&in); err != nil {
					return err
				}
				first := []byte("first")
				if err := s.SendMsg(&first); err != nil {
					return err
				}
				close(e.sent)
				<-e.proceed // the client must have the first one before this
				last := []byte("last")
				return s.SendMsg(&last)
			}},
			{StreamName: "Client", ClientStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
				total := 0
				for {
					var in []byte
					err := s.RecvMsg(&in)
					if err == io.EOF {
						out := []byte{byte(total)}
						return s.SendMsg(&out)
					}
					if err != nil {
						return err
					}
					total += len(in)
				}
			}},
			{StreamName: "Bidi", ServerStreams: true, ClientStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
				for {
					var in []byte
					if err := s.RecvMsg(&in); err != nil {
						if status.Code(err) == codes.Canceled || errors.Is(s.Context().Err(), context.Canceled) {
							close(e.cancelled)
						}
						return err
					}
					out := append([]byte("re:"), in...)
					if err := s.SendMsg(&out); err != nil {
						return err
					}
				}
			}},
		},
	}
}

func TestGRPCThroughPortico(t *testing.T) {
	svc := &echoService{sent: make(chan struct{}), proceed: make(chan struct{}), cancelled: make(chan struct{}), deadline: make(chan time.Duration, 1)}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}))
	gs.RegisterService(svc.desc(), struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	pc := withDefaults(config.Pool{Name: "grpc", Upstreams: []string{"h2c://" + ln.Addr().String()}})
	ts := startServer(t, poolConfig(pc, config.Site{}))
	conn, err := grpc.NewClient("passthrough:///app.example.com",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", ts.https)
		}),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ts.certs.Pool, ServerName: "app.example.com"})),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	// unary, with its trailer, and the deadline carried to the server
	in, out := []byte("hi"), []byte(nil)
	var trailer metadata.MD
	if err := conn.Invoke(ctx, "/test.Echo/Unary", &in, &out, grpc.Trailer(&trailer)); err != nil || string(out) != "echo:hi" {
		t.Fatalf("unary: %q %v", out, err)
	}
	if got := trailer.Get("x-echo-trailer"); len(got) != 1 || got[0] != "t1" {
		t.Errorf("unary trailer: %v", trailer)
	}
	if d := recv(t, svc.deadline, "the server's deadline"); d <= 0 || d > waitTimeout {
		t.Errorf("the server saw a deadline %v away, want the client's (at most %v)", d, waitTimeout)
	}
	// a status other than OK, in grpc-status
	fail := []byte("fail")
	if err := conn.Invoke(ctx, "/test.Echo/Unary", &fail, &out); status.Code(err) != codes.FailedPrecondition || status.Convert(err).Message() != "asked to fail" {
		t.Errorf("failing unary: %v, want FailedPrecondition \"asked to fail\"", err)
	}

	// server streaming: the first message arrives while the server waits
	ss, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/test.Echo/Server")
	if err != nil {
		t.Fatal(err)
	}
	if err := ss.SendMsg(&in); err != nil {
		t.Fatal(err)
	}
	ss.CloseSend()
	var msg []byte
	if err := ss.RecvMsg(&msg); err != nil || string(msg) != "first" {
		t.Fatalf("server stream, first message: %q %v", msg, err)
	}
	recv(t, svc.sent, "the server stream's first send")
	close(svc.proceed)
	if err := ss.RecvMsg(&msg); err != nil || string(msg) != "last" {
		t.Fatalf("server stream, last message: %q %v", msg, err)
	}
	if err := ss.RecvMsg(&msg); err != io.EOF {
		t.Fatalf("server stream end: %v", err)
	}

	// client streaming
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/test.Echo/Client")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ab", "cde", "f"} {
		b := []byte(s)
		if err := cs.SendMsg(&b); err != nil {
			t.Fatal(err)
		}
	}
	cs.CloseSend()
	if err := cs.RecvMsg(&msg); err != nil || len(msg) != 1 || msg[0] != 6 {
		t.Fatalf("client stream: %v %v, want [6]", msg, err)
	}

	// bidirectional, message by message; then the client cancels
	bctx, bcancel := context.WithCancel(ctx)
	bs, err := conn.NewStream(bctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/test.Echo/Bidi")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"one", "two", "three"} {
		b := []byte(s)
		if err := bs.SendMsg(&b); err != nil {
			t.Fatal(err)
		}
		if err := bs.RecvMsg(&msg); err != nil || string(msg) != "re:"+s {
			t.Fatalf("bidi %s: %q %v", s, msg, err)
		}
	}
	bcancel()
	recv(t, svc.cancelled, "the server's stream seeing the cancel")
}
