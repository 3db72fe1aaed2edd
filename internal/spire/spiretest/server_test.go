package spiretest_test

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/nops-kernel/nops/internal/spire/spiretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The fake refuses a call without the Workload API's security header, as a SPIRE agent does, so a
// client that forgets it fails in tests too.
func TestServerRefusesCallsWithoutTheSecurityHeader(t *testing.T) {
	ca := spiretest.NewCA(t, "spire.test")
	s := spiretest.Start(t, ca.IssueSVID(t, ca.ID(t, "w"), 0), ca.Bundle())
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(t.Context(), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Recv without the header: %v, want InvalidArgument", err)
	}
}
