package spiretest

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Server is a fake SPIFFE Workload API. Every FetchX509SVID and FetchX509Bundles stream gets the
// current state at once and again after each SetSVID or SetBundle; the stream stays open until the
// client goes or the server stops. Like a SPIRE agent it refuses calls without the
// "workload.spiffe.io: true" metadata (InvalidArgument), and answers PermissionDenied "no
// identity issued" while it has no SVID. Safe for concurrent use.
type Server struct {
	addr string
	gs   *grpc.Server
	done chan struct{} // closed when Serve returns

	mu      sync.Mutex // guards svid, bundle and changed
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	changed chan struct{} // closed and replaced at every change

	svidStreams   atomic.Int64
	bundleStreams atomic.Int64
	stopOnce      sync.Once
}

// Start serves the Workload API on a unix socket in a temporary directory of tb, with svid (nil:
// no identity yet) and bundle (nil: the bundle of no trust domain), and stops it when tb ends.
func Start(tb testing.TB, svid *x509svid.SVID, bundle *x509bundle.Bundle) *Server {
	tb.Helper()
	dir := tb.TempDir()
	// A unix socket path is limited to about 104 bytes; long test names make long temp dirs.
	if len(dir) > 80 {
		d, err := os.MkdirTemp("", "spiretest")
		if err != nil {
			tb.Fatalf("spiretest: temp dir: %v", err)
		}
		tb.Cleanup(func() { _ = os.RemoveAll(d) })
		dir = d
	}
	path := filepath.Join(dir, "workload.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatalf("spiretest: listen on %s: %v", path, err)
	}
	s := &Server{
		addr:    "unix://" + path,
		gs:      grpc.NewServer(),
		done:    make(chan struct{}),
		svid:    svid,
		bundle:  bundle,
		changed: make(chan struct{}),
	}
	workload.RegisterSpiffeWorkloadAPIServer(s.gs, &api{s: s})
	go func() {
		defer close(s.done)
		_ = s.gs.Serve(ln)
	}()
	tb.Cleanup(s.Stop)
	return s
}

// Addr returns the server's address as SPIFFE_ENDPOINT_SOCKET takes it: unix:///path.
func (s *Server) Addr() string { return s.addr }

// SetSVID makes svid the workload's SVID (nil: none) and pushes it to every open X.509-SVID stream.
func (s *Server) SetSVID(svid *x509svid.SVID) {
	s.mu.Lock()
	s.svid = svid
	s.notifyLocked()
	s.mu.Unlock()
}

// SetBundle makes bundle the trust bundle and pushes it to every open stream.
func (s *Server) SetBundle(bundle *x509bundle.Bundle) {
	s.mu.Lock()
	s.bundle = bundle
	s.notifyLocked()
	s.mu.Unlock()
}

// Streams returns how many FetchX509SVID and FetchX509Bundles streams are open.
func (s *Server) Streams() (svid, bundles int64) {
	return s.svidStreams.Load(), s.bundleStreams.Load()
}

// Stop closes every stream and the listener, and waits for the server to end. Safe to call more
// than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.gs.Stop()
		<-s.done
	})
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// state returns the current SVID and bundle and a channel closed at the next change.
func (s *Server) state() (*x509svid.SVID, *x509bundle.Bundle, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid, s.bundle, s.changed
}

// api implements the Workload API's gRPC service over a Server.
type api struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	s *Server
}

func (a *api) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := checkHeader(stream); err != nil {
		return err
	}
	a.s.svidStreams.Add(1)
	defer a.s.svidStreams.Add(-1)
	for {
		svid, bundle, changed := a.s.state()
		if svid == nil {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		resp, err := svidResponse(svid, bundle)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (a *api) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	if err := checkHeader(stream); err != nil {
		return err
	}
	a.s.bundleStreams.Add(1)
	defer a.s.bundleStreams.Add(-1)
	for {
		_, bundle, changed := a.s.state()
		resp := &workload.X509BundlesResponse{Bundles: map[string][]byte{}}
		if bundle != nil {
			resp.Bundles[bundle.TrustDomain().IDString()] = concatDER(bundle)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// checkHeader refuses a call without the security header of the Workload API specification.
func checkHeader(stream grpc.ServerStream) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func svidResponse(svid *x509svid.SVID, bundle *x509bundle.Bundle) (*workload.X509SVIDResponse, error) {
	certs, key, err := svid.MarshalRaw()
	if err != nil {
		return nil, err
	}
	if bundle == nil || bundle.TrustDomain() != svid.ID.TrustDomain() {
		return nil, errors.New("spiretest: no bundle for the SVID's trust domain")
	}
	return &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId:    svid.ID.String(),
		X509Svid:    certs,
		X509SvidKey: key,
		Bundle:      concatDER(bundle),
	}}}, nil
}

func concatDER(b *x509bundle.Bundle) []byte {
	var buf bytes.Buffer
	for _, c := range b.X509Authorities() {
		buf.Write(c.Raw)
	}
	return buf.Bytes()
}
