package reqsig_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// heldNonces is MemoryNonces whose claims wait until the test lets each one go.
type heldNonces struct {
	reqsig.MemoryNonces
	release chan struct{}
}

func (h *heldNonces) ClaimNonce(ctx context.Context, keyID, nonce string, expiresAt, now time.Time) (bool, error) {
	<-h.release
	return h.MemoryNonces.ClaimNonce(ctx, keyID, nonce, expiresAt, now)
}

// TestBeginClaimsWhileTheCallerGoesOn: Begin returns once the signature's checks pass, with the
// signature's key and tenant, while the nonce claim is still pending; Wait gives the claim's
// answer (accepted, then a replay), any number of times; a failed check is known at once.
// Every verification is counted once, when its outcome is known, and every claim is timed.
func TestBeginClaimsWhileTheCallerGoesOn(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	e := newVerifyEnv(t, reqsig.Config{})
	nonces := &heldNonces{release: make(chan struct{})}
	v := newVerifier(t, e.keys, nonces, e.clock, reqsig.Config{MeterProvider: mp})
	r, body := sign(t, getPlain, e.hmac, t0, "")

	p, err := v.Begin(context.Background(), r, body)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	select {
	case <-p.Done():
		t.Fatal("the claim is done before the store answered")
	default:
	}
	if res := p.Result(); res.KeyID != e.hmacID || res.TenantID == "" {
		t.Fatalf("pending result %+v", res)
	}
	close(nonces.release)
	for range 2 {
		if res, err := p.Wait(); err != nil || res.KeyID != e.hmacID {
			t.Fatalf("Wait: %+v %v", res, err)
		}
	}
	replay, err := v.Begin(context.Background(), r, body)
	if err != nil {
		t.Fatalf("Begin of a replay (its checks pass): %v", err)
	}
	if _, err := replay.Wait(); reqsig.RefusalCode(err) != reqsig.CodeReplay {
		t.Fatalf("Wait of a replay: %v, want %s", err, reqsig.CodeReplay)
	}

	r.Header.Set("Signature", "nops=:AAAA:")
	bad, err := v.Begin(context.Background(), r, body)
	if reqsig.RefusalCode(err) != reqsig.CodeBadSignature || errs.CodeOf(err) != errs.Unauthenticated {
		t.Fatalf("Begin with a bad signature: %v", err)
	}
	if _, werr := bad.Wait(); werr != err {
		t.Fatalf("Wait after a failed Begin: %v, want %v", werr, err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	var claims uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case "nops.reqsig.verifications":
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					o, _ := dp.Attributes.Value("outcome")
					rs, _ := dp.Attributes.Value("reason")
					got[o.AsString()+"/"+rs.AsString()] += dp.Value
				}
			case "nops.reqsig.nonce_claim.duration":
				for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
					claims += dp.Count
				}
			}
		}
	}
	if got["accepted/"] != 1 || got["refused/replay"] != 1 || got["refused/bad_signature"] != 1 || len(got) != 3 {
		t.Fatalf("verifications %v, want one accepted, one replay, one bad signature", got)
	}
	if claims != 2 {
		t.Fatalf("nonce claims timed %d times, want 2", claims)
	}
}
