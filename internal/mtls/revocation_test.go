package mtls_test

import (
	"crypto/x509"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/mtls"
)

func TestRevocationClosesOpenConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		h2   bool
	}{{"http1.1", false}, {"h2", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *harnessConfig) { c.store = true })
			id := agentID(h.ca, agentA)
			src := newSVIDSource(h.ca.svid(t, id, nil))
			c := h.client(t, src, clientOpts{h2: tc.h2, keepAlive: true})
			resp, err := c.Get(h.url + "/stream")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if want := map[bool]int{false: 1, true: 2}[tc.h2]; resp.ProtoMajor != want {
				t.Fatalf("protocol %s, want HTTP/%d", resp.Proto, want)
			}
			br := readLine(t, resp)

			// A bystander's connection stays open.
			other := agentID(h.ca, agentB)
			oc := h.client(t, newSVIDSource(h.ca.svid(t, other, nil)), clientOpts{h2: tc.h2, keepAlive: true})
			oresp, err := oc.Get(h.url + "/stream")
			if err != nil {
				t.Fatal(err)
			}
			defer oresp.Body.Close()
			readLine(t, oresp)

			// Recorded in the store, as by another replica: Run reads it and closes the connection.
			h.store.add(mtls.Revocation{ID: id, RevokedAt: time.Now()})
			ended := make(chan error, 1)
			go func() { _, err := io.ReadAll(br); ended <- err }()
			select {
			case err := <-ended:
				if err == nil {
					t.Log("stream ended cleanly") // a closed connection may surface as EOF
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the revoked identity's open connection was not closed")
			}
			// The counter is incremented right after the close the client saw.
			waitFor(t, "the closed connection to be counted", func() bool {
				return h.counter(t, "nops_mtls_revoked_connections_closed_total") == 1
			})
			// Its next handshake is refused; the bystander still streams on its connection.
			if _, _, err := get(h.client(t, src, clientOpts{h2: tc.h2}), h.url+"/"); err == nil {
				t.Error("the revoked identity was served again")
			}
			// Over HTTP/2 this request shares the bystander's streaming connection.
			if _, _, err := get(oc, h.url+"/"); err != nil {
				t.Fatalf("bystander's request after the revocation: %v", err)
			}
		})
	}
}

func TestConnectionsAreForgottenWhenClosed(t *testing.T) {
	h := newHarness(t, nil)
	id := agentID(h.ca, agentA)
	c := h.client(t, newSVIDSource(h.ca.svid(t, id, nil)), clientOpts{keepAlive: true})
	h.expectAccepted(t, c, id)
	if n := h.srv.Tracked(); n != 1 {
		t.Fatalf("tracked = %d, want 1", n)
	}
	c.CloseIdleConnections()
	waitFor(t, "the closed connection to be forgotten", func() bool { return h.srv.Tracked() == 0 })
}

func TestRefreshFailureKeepsRevocationsInForce(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.store = true; c.cfg.RefreshInterval = time.Hour })
	id := agentID(h.ca, agentA)
	src := newSVIDSource(h.ca.svid(t, id, nil))
	h.store.add(mtls.Revocation{ID: id, RevokedAt: time.Now()})
	if err := h.srv.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.store.setFail(errInjected)
	if err := h.srv.Refresh(t.Context()); !errors.Is(err, errInjected) {
		t.Fatalf("Refresh with a failing store = %v, want the store's error", err)
	}
	h.expectRefused(t, src, mtls.ReasonRevoked)
	if got := h.counter(t, "nops_mtls_revocation_refreshes_total"); got < 3 {
		t.Errorf("refreshes counted = %d, want at least 3", got)
	}
}

func TestRefreshReadsFromCursorWithOverlap(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) {
		c.store = true
		c.cfg.RefreshInterval = time.Hour
		c.cfg.RefreshOverlap = time.Minute
	})
	t0 := time.Now()
	h.store.add(mtls.Revocation{ID: agentID(h.ca, agentB), RevokedAt: t0})
	if err := h.srv.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A revocation stamped 30 s before the latest one read (a lagging replica clock, a late
	// commit) is within the overlap and still read.
	id := agentID(h.ca, agentA)
	h.store.add(mtls.Revocation{ID: id, RevokedAt: t0.Add(-30 * time.Second)})
	if err := h.srv.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	src := newSVIDSource(h.ca.svid(t, id, func(c *x509.Certificate) { c.NotBefore = t0.Add(-time.Hour) }))
	h.expectRefused(t, src, mtls.ReasonRevoked)
}

func TestRevokeRefusesMalformedRevocations(t *testing.T) {
	h := newHarness(t, nil)
	id := agentID(h.ca, agentA)
	now := time.Now()
	for name, r := range map[string]mtls.Revocation{
		"empty":        {RevokedAt: now},
		"both":         {Serial: "1a", ID: id, RevokedAt: now},
		"no time":      {Serial: "1a"},
		"not hex":      {Serial: "xyz", RevokedAt: now},
		"signed":       {Serial: "-1a", RevokedAt: now},
		"with colons":  {Serial: "1a:2b", RevokedAt: now},
		"zero id time": {ID: id},
	} {
		t.Run(name, func(t *testing.T) {
			if err := h.srv.Revoke(t.Context(), r); err == nil {
				t.Errorf("Revoke(%+v) accepted", r)
			}
		})
	}
	// Serials are compared in canonical form: upper case and leading zeros still match.
	svid := h.ca.svid(t, id, nil)
	if err := h.srv.Revoke(t.Context(), mtls.Revocation{Serial: "0X000" + strings.ToUpper(svid.Certificates[0].SerialNumber.Text(16)), RevokedAt: now}); err != nil {
		t.Fatal(err)
	}
	h.expectRefused(t, newSVIDSource(svid), mtls.ReasonRevoked)
}

func TestExpiredRevocationsAreForgotten(t *testing.T) {
	clock := newClock(time.Now())
	h := newHarness(t, func(c *harnessConfig) { c.store = true; c.now = clock.Now; c.cfg.RefreshInterval = time.Hour })
	h.store.add(mtls.Revocation{Serial: "abc", RevokedAt: clock.Now(), Expires: clock.Now().Add(time.Minute)})
	h.store.add(mtls.Revocation{ID: agentID(h.ca, agentA), RevokedAt: clock.Now()}) // no expiry: kept
	if err := h.srv.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.gauge(t, "nops_mtls_revocations"); got != 2 {
		t.Fatalf("revocations = %v, want 2", got)
	}
	clock.Add(2 * time.Minute)
	if err := h.srv.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.gauge(t, "nops_mtls_revocations"); got != 1 {
		t.Errorf("revocations after expiry = %v, want 1", got)
	}
	if got := h.gauge(t, "nops_mtls_revocations_age_seconds"); got != 0 {
		t.Errorf("revocations age right after a refresh = %v, want 0", got)
	}
}

func TestSVIDExpiryGauge(t *testing.T) {
	clock := newClock(time.Now())
	h := newHarness(t, func(c *harnessConfig) { c.now = clock.Now })
	sv, _ := h.serverSVID.GetX509SVID()
	want := sv.Certificates[0].NotAfter.Sub(clock.Now()).Seconds()
	if got := h.gauge(t, "nops_mtls_svid_expiry_seconds"); got != want {
		t.Errorf("expiry = %v, want %v", got, want)
	}
	// Renewal is reflected at the next collection.
	renewed := h.ca.svid(t, h.serverID, func(c *x509.Certificate) { c.NotAfter = clock.Now().Add(3 * time.Hour) })
	h.serverSVID.set(renewed)
	if got, want := h.gauge(t, "nops_mtls_svid_expiry_seconds"), renewed.Certificates[0].NotAfter.Sub(clock.Now()).Seconds(); got != want {
		t.Errorf("expiry after renewal = %v, want %v", got, want)
	}
	for _, m := range h.collect(t) {
		if m.Name == "nops_mtls_svid_expiry_seconds" {
			v, _ := m.Data.(metricdata.Gauge[float64]).DataPoints[0].Attributes.Value("spiffe_id")
			if v.AsString() != h.serverID.String() {
				t.Errorf("spiffe_id = %q, want %s", v.AsString(), h.serverID)
			}
		}
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	ca := newCA(t, testTD)
	src := newSVIDSource(ca.svid(t, ca.id("kernel", "n"), nil))
	b := ca.bundle()
	for name, f := range map[string]func() error{
		"no trust domain": func() error { _, err := mtls.New(mtls.Config{}, src, b, mtls.Options{}); return err },
		"no svid":         func() error { _, err := mtls.New(mtls.Config{TrustDomain: ca.td}, nil, b, mtls.Options{}); return err },
		"no bundle": func() error {
			_, err := mtls.New(mtls.Config{TrustDomain: ca.td}, src, nil, mtls.Options{})
			return err
		},
		"negative interval": func() error {
			_, err := mtls.New(mtls.Config{TrustDomain: ca.td, RefreshInterval: -1}, src, b, mtls.Options{})
			return err
		},
	} {
		if f() == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
