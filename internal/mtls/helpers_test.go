package mtls_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/mtls"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testTD  = "nops.test"
	tenantX = "ten_01jz8y3w6v6r3b5q8x9k2m4n7q"
	agentA  = "agt_01jz8y3w6v6r3b5q8x9k2m4n7a"
	agentB  = "agt_01jz8y3w6v6r3b5q8x9k2m4n7b"
)

// waitFor polls cond until it holds or a generous deadline passes. It bounds a wait; it is not
// a timing assertion.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeStore is a RevocationStore in memory, with failure injection.
type fakeStore struct {
	mu    sync.Mutex
	revs  []mtls.Revocation
	fail  error
	calls int
}

func (f *fakeStore) Revocations(_ context.Context, since time.Time) ([]mtls.Revocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return nil, f.fail
	}
	var out []mtls.Revocation
	for _, r := range f.revs {
		if !r.RevokedAt.Before(since) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeStore) add(r mtls.Revocation) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revs = append(f.revs, r)
}

func (f *fakeStore) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeStore) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// harness is a real mTLS listener on 127.0.0.1:0 served by net/http.
type harness struct {
	ca         *testCA
	srv        *mtls.Server
	url        string
	serverID   spiffeid.ID
	serverSVID *svidSource
	bundles    *x509bundle.Set
	reader     *sdkmetric.ManualReader
	store      *fakeStore // nil unless withStore
}

type harnessConfig struct {
	store     bool  // back the server by a fakeStore and run Run
	storeFail error // with store: the store fails from the start
	noLoad    bool  // with store: do not Refresh before serving
	cfg       mtls.Config
	now       func() time.Time
	noConfig  bool         // serve TLSConfig() without Configure's hooks
	handler   http.Handler // nil: testHandler
}

func newHarness(t testing.TB, mutate func(*harnessConfig)) *harness {
	t.Helper()
	ca := newCA(t, testTD)
	hc := harnessConfig{cfg: mtls.Config{TrustDomain: ca.td, RefreshInterval: 20 * time.Millisecond}}
	if mutate != nil {
		mutate(&hc)
	}
	h := &harness{
		ca:       ca,
		serverID: ca.id("kernel", "node-1"),
		bundles:  x509bundle.NewSet(ca.bundle()),
		reader:   sdkmetric.NewManualReader(),
	}
	h.serverSVID = newSVIDSource(ca.svid(t, h.serverID, nil))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	opts := mtls.Options{MeterProvider: mp, Now: hc.now, Logger: slog.New(slog.DiscardHandler)}
	if hc.store {
		h.store = &fakeStore{fail: hc.storeFail}
		opts.Store = h.store
	}
	srv, err := mtls.New(hc.cfg, h.serverSVID, h.bundles, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	h.srv = srv

	ctx, cancel := context.WithCancel(context.Background())
	if hc.store {
		if !hc.noLoad {
			if err := srv.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
		}
		ran := make(chan struct{})
		go func() { defer close(ran); _ = srv.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-ran })
	} else {
		t.Cleanup(cancel)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if hc.handler == nil {
		hc.handler = testHandler()
	}
	hs := &http.Server{Handler: hc.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog()}
	if hc.noConfig {
		hs.TLSConfig = srv.TLSConfig()
	} else {
		srv.Configure(hs)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = hs.Close(); <-served })
	h.url = "https://" + ln.Addr().String()
	return h
}

// testHandler answers "/" with the peer's SPIFFE ID and serial, and streams on "/stream" until the
// request ends.
func testHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p, ok := mtls.PeerOf(r)
		if !ok {
			http.Error(w, "no peer", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Peer-Serial", p.Serial)
		_, _ = io.WriteString(w, p.ID.String())
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "streaming\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	return mux
}

type clientOpts struct {
	h2        bool
	keepAlive bool
	mutate    func(*tls.Config)
}

// client returns an HTTP client presenting the SVIDs of source (none when nil) and accepting
// only the harness's server SPIFFE ID.
func (h *harness) client(t testing.TB, source x509svid.Source, o clientOpts) *http.Client {
	t.Helper()
	var cfg *tls.Config
	if source != nil {
		cfg = mtls.ClientConfig(source, h.bundles, h.serverID)
	} else {
		cfg = tlsconfig.TLSClientConfig(h.bundles, tlsconfig.AuthorizeID(h.serverID))
		cfg.MinVersion = tls.VersionTLS13
	}
	if o.mutate != nil {
		o.mutate(cfg)
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: o.h2, DisableKeepAlives: !o.keepAlive, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// get does GET path and returns the body of a 200.
func get(c *http.Client, url string) (string, *http.Response, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", resp, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", resp, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), resp, nil
}

// handshakes returns nops_mtls_handshakes_total as "accepted" and "refused/<reason>" counts.
func (h *harness) handshakes(t testing.TB) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, m := range h.collect(t) {
		if m.Name != "nops_mtls_handshakes_total" {
			continue
		}
		for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
			result, _ := dp.Attributes.Value("result")
			key := result.AsString()
			if reason, ok := dp.Attributes.Value("reason"); ok {
				key += "/" + reason.AsString()
			}
			out[key] += dp.Value
		}
	}
	return out
}

func (h *harness) collect(t testing.TB) []metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var out []metricdata.Metrics
	for _, sm := range rm.ScopeMetrics {
		out = append(out, sm.Metrics...)
	}
	return out
}

// counter returns the total of an int64 counter.
func (h *harness) counter(t testing.TB, name string) int64 {
	t.Helper()
	var n int64
	for _, m := range h.collect(t) {
		if m.Name == name {
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				n += dp.Value
			}
		}
	}
	return n
}

// expectRefused makes one request with source's SVID and checks that it fails and that the
// server refused the handshake for reason, and for no other.
func (h *harness) expectRefused(t *testing.T, source x509svid.Source, reason mtls.Reason) {
	t.Helper()
	c := h.client(t, source, clientOpts{})
	body, _, err := get(c, h.url+"/")
	if err == nil {
		t.Fatalf("request succeeded (peer %q), want the handshake refused for %s", body, reason)
	}
	got := h.handshakes(t)
	if got["refused/"+string(reason)] == 0 || got["accepted"] != 0 {
		t.Fatalf("handshakes = %v, want refused/%s only (client error: %v)", got, reason, err)
	}
	for k := range got {
		if k != "refused/"+string(reason) {
			t.Errorf("unexpected handshake result %s", k)
		}
	}
	// The refused connection is closed and forgotten; nothing leaks in the tracker.
	waitFor(t, "the refused connection to be forgotten", func() bool { return h.srv.Tracked() == 0 })
}

// expectAccepted makes one request with source's SVID and checks the server saw id.
func (h *harness) expectAccepted(t *testing.T, c *http.Client, id spiffeid.ID) *http.Response {
	t.Helper()
	body, resp, err := get(c, h.url+"/")
	if err != nil {
		t.Fatalf("request refused: %v (handshakes %v)", err, h.handshakes(t))
	}
	if body != id.String() {
		t.Fatalf("PeerID = %q, want %s", body, id)
	}
	return resp
}

// readLine reads the first line of a streamed body.
func readLine(t *testing.T, resp *http.Response) *bufio.Reader {
	t.Helper()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "streaming\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	return br
}

var errInjected = errors.New("injected store failure")

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *clock { return &clock{now: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// gauge returns the value of a gauge with one data point (0 when absent).
func (h *harness) gauge(t testing.TB, name string) float64 {
	t.Helper()
	for _, m := range h.collect(t) {
		if m.Name != name {
			continue
		}
		switch d := m.Data.(type) {
		case metricdata.Gauge[float64]:
			if len(d.DataPoints) == 1 {
				return d.DataPoints[0].Value
			}
			t.Fatalf("%s has %d data points", name, len(d.DataPoints))
		case metricdata.Gauge[int64]:
			if len(d.DataPoints) == 1 {
				return float64(d.DataPoints[0].Value)
			}
			t.Fatalf("%s has %d data points", name, len(d.DataPoints))
		}
	}
	return 0
}

func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }

// parseHex reads an optionally 0x-prefixed hexadecimal serial, positive.
func parseHex(s string) (*big.Int, bool) {
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s = s[2:]
	}
	if s == "" {
		return nil, false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return nil, false
		}
	}
	n, ok := new(big.Int).SetString(s, 16)
	return n, ok && n.Sign() > 0
}
