package spire_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/spire"
	"github.com/nops-kernel/nops/internal/spire/spiretest"
)

// Sources start a watch goroutine and gRPC connections: goleak checks Close ends them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTD = "spire.test"

type fixture struct {
	ca     *spiretest.CA
	server *spiretest.Server
	src    *spire.Source
	reader *sdkmetric.ManualReader
	id     spiffeid.ID
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{ca: spiretest.NewCA(t, testTD), reader: sdkmetric.NewManualReader()}
	f.id = f.ca.ID(t, "kernel", "node-1")
	f.server = spiretest.Start(t, f.ca.IssueSVID(t, f.id, time.Hour), f.ca.Bundle())
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	src, err := spire.Start(t.Context(), spire.Config{Addr: f.server.Addr(), Meter: mp.Meter("test"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	f.src = src
	return f
}

// updates returns nops_identity_spire_updates_total{change}.
func (f *fixture) updates(t *testing.T, change string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := f.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "nops_identity_spire_updates_total" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				if v, _ := dp.Attributes.Value("change"); v.AsString() == change {
					return dp.Value
				}
			}
		}
	}
	return 0
}

// waitFor polls cond until it holds or a generous deadline passes: it bounds a wait, it is no
// timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func currentSerial(t *testing.T, src *spire.Source) string {
	t.Helper()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatalf("GetX509SVID: %v", err)
	}
	return svid.Certificates[0].SerialNumber.String()
}

func TestSourceServesTheWorkloadAPIsSVIDAndBundle(t *testing.T) {
	f := newFixture(t)
	if got := f.src.TrustDomain().Name(); got != testTD {
		t.Errorf("TrustDomain %q, want %q (the SVID's)", got, testTD)
	}
	svid, err := f.src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != f.id {
		t.Errorf("SVID %s, want %s", svid.ID, f.id)
	}
	b, err := f.src.GetX509BundleForTrustDomain(f.ca.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	if !b.Equal(f.ca.Bundle()) {
		t.Error("the bundle is not the CA's")
	}
	// The SVID verifies against the bundle the source serves: what the mTLS listener does.
	if _, _, err := x509svid.Verify(svid.Certificates, b); err != nil {
		t.Errorf("the served SVID does not verify against the served bundle: %v", err)
	}
	if _, err := f.src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.test")); err == nil {
		t.Error("a bundle for a foreign trust domain was served")
	}
}

func TestBundleJWKSIsTheSPIFFEBundle(t *testing.T) {
	f := newFixture(t)
	body, etag := f.src.BundleJWKS()
	sb, err := spiffebundle.Parse(f.ca.TrustDomain(), body)
	if err != nil {
		t.Fatalf("spiffebundle.Parse: %v\n%s", err, body)
	}
	if !sb.X509Bundle().Equal(f.ca.Bundle()) {
		t.Error("the JWKS holds other roots than the Workload API's bundle")
	}
	if hint, ok := sb.RefreshHint(); !ok || hint != identity.BundleRefreshHint {
		t.Errorf("spiffe_refresh_hint %v (%v), want %v", hint, ok, identity.BundleRefreshHint)
	}
	if _, ok := sb.SequenceNumber(); ok {
		t.Error("spiffe_sequence set: the Workload API conveys none")
	}
	if body2, etag2 := f.src.BundleJWKS(); etag2 != etag || string(body2) != string(body) {
		t.Error("the rendering of an unchanged bundle changed")
	}
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) < 10 {
		t.Errorf("etag %s is not a strong entity tag", etag)
	}
	certs := parsePEM(t, f.src.BundlePEM())
	if len(certs) != 1 || !certs[0].Equal(f.ca.Roots()[0]) {
		t.Errorf("BundlePEM holds %d certificates, want the root", len(certs))
	}
}

func TestPushedRenewalIsPickedUpWithoutRestart(t *testing.T) {
	f := newFixture(t)
	before := currentSerial(t, f.src)
	renewed := f.ca.IssueSVID(t, f.id, time.Hour)
	f.server.SetSVID(renewed)
	want := renewed.Certificates[0].SerialNumber.String()
	waitFor(t, "the renewed SVID", func() bool { return currentSerial(t, f.src) == want })
	if before == want {
		t.Fatal("the test CA issued the same serial twice")
	}
	waitFor(t, "the svid update to be counted", func() bool { return f.updates(t, "svid") == 1 })
	if got := f.updates(t, "bundle"); got != 0 {
		t.Errorf("bundle updates %d after an SVID renewal, want 0", got)
	}
}

func TestPushedBundleWithAnAddedRootIsSeen(t *testing.T) {
	f := newFixture(t)
	_, etagBefore := f.src.BundleJWKS()
	newRoot := f.ca.AddRoot(t)
	f.server.SetBundle(f.ca.Bundle())
	waitFor(t, "the bundle with the new root", func() bool {
		b, err := f.src.GetX509BundleForTrustDomain(f.ca.TrustDomain())
		return err == nil && b.HasX509Authority(newRoot) && len(b.X509Authorities()) == 2
	})
	// An SVID of the new root now verifies: a client rotated to it is accepted.
	b, _ := f.src.GetX509BundleForTrustDomain(f.ca.TrustDomain())
	client := f.ca.IssueSVID(t, f.ca.ID(t, "tenant", "ten_1", "agent", "agt_1"), time.Hour)
	if _, _, err := x509svid.Verify(client.Certificates, b); err != nil {
		t.Errorf("an SVID of the added root does not verify: %v", err)
	}
	body, etag := f.src.BundleJWKS()
	if etag == etagBefore {
		t.Error("the entity tag did not change with the bundle")
	}
	sb, err := spiffebundle.Parse(f.ca.TrustDomain(), body)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(sb.X509Authorities()); got != 2 {
		t.Errorf("the JWKS holds %d roots, want the old and the new", got)
	}
	waitFor(t, "the bundle update to be counted", func() bool { return f.updates(t, "bundle") == 1 })
}

func TestStartFailsClearlyWhenNoServerAnswers(t *testing.T) {
	addr := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	_, err := spire.Start(t.Context(), spire.Config{Addr: addr, StartTimeout: time.Second})
	if err == nil {
		t.Fatal("Start succeeded without a Workload API")
	}
	t.Log(err)
	for _, want := range []string{"no X.509-SVID from the SPIFFE Workload API", addr, "within 1s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestStartFailsClearlyWithoutAnIdentity(t *testing.T) {
	ca := spiretest.NewCA(t, testTD)
	server := spiretest.Start(t, nil, ca.Bundle())
	_, err := spire.Start(t.Context(), spire.Config{Addr: server.Addr(), StartTimeout: time.Second})
	if err == nil {
		t.Fatal("Start succeeded though the Workload API has no identity for this process")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "no identity issued") {
		t.Errorf("error %q does not carry the Workload API's reason", err)
	}
}

func TestStartRefusesABadAddress(t *testing.T) {
	for _, addr := range []string{"", "/run/spire/agent.sock", "http://127.0.0.1:1", "tcp://localhost:8081"} {
		_, err := spire.Start(t.Context(), spire.Config{Addr: addr, StartTimeout: time.Second})
		if err == nil || !strings.Contains(err.Error(), "spiffe workload api address") {
			t.Errorf("Start(%q): %v, want an address error", addr, err)
		}
	}
}

func TestSignRefusesWithAConflict(t *testing.T) {
	f := newFixture(t)
	_, err := f.src.Sign(nil, f.id, time.Minute)
	if !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "SPIRE agent") {
		t.Errorf("Sign: %v, want a conflict naming the SPIRE agent", err)
	}
}

func TestCloseStopsTheSource(t *testing.T) {
	f := newFixture(t)
	if err := f.src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := f.src.GetX509SVID(); err == nil {
		t.Error("a closed source still serves an SVID")
	}
	waitFor(t, "the Workload API streams to close", func() bool { n, _ := f.server.Streams(); return n == 0 })
}

func parsePEM(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}
