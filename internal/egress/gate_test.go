package egress_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/mod/sumdb/note"

	"github.com/nops-kernel/nops/internal/egress"
)

// signer is a test key pair for allow-lists.
type signer struct {
	skey, vkey string
	verifiers  note.Verifiers
}

func newSigner(t testing.TB, name string) signer {
	t.Helper()
	skey, vkey, err := egress.GenerateAllowListKey(name)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := egress.ParseVerifierKeys(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return signer{skey, vkey, vs}
}

func (s signer) sign(t testing.TB, text string) []byte {
	t.Helper()
	out, err := egress.SignAllowList([]byte(text), s.skey)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestSignedAllowList: a list verifies with its key and loads; every tampering is refused.
func TestSignedAllowList(t *testing.T) {
	ops, other := newSigner(t, "ops"), newSigner(t, "ops")
	text := "serial: 3\nservices:\n  agents:\n    class: D1\n    allow:\n      - cidr: 127.0.0.1/32\n        ports: [8080]\n"
	signed := ops.sign(t, text)
	l, err := egress.OpenAllowList(signed, ops.verifiers)
	if err != nil {
		t.Fatalf("OpenAllowList: %v", err)
	}
	if l.Serial != 3 || l.Signer != "ops" || len(l.SHA256) != 64 || l.Source != "signed allow-list" {
		t.Fatalf("loaded %+v", l)
	}
	tampered := map[string][]byte{
		// One character of the policy changed after signing: a wider port.
		"text changed":     bytes.Replace(signed, []byte("8080"), []byte("8081"), 1),
		"class widened":    bytes.Replace(signed, []byte("class: D1"), []byte("class: D4"), 1),
		"line added":       bytes.Replace(signed, []byte("services:\n"), []byte("services:\n  otlp: {class: D4}\n"), 1),
		"signature byte":   flipSignatureByte(t, signed),
		"unsigned":         []byte(text),
		"signature cut":    signed[:bytes.LastIndex(signed, []byte("\n\n"))+2],
		"empty":            nil,
		"garbage":          []byte("\x00\x01not a note"),
		"other key's list": other.sign(t, text),
	}
	for name, data := range tampered {
		t.Run(name, func(t *testing.T) {
			if _, err := egress.OpenAllowList(data, ops.verifiers); !errors.Is(err, egress.ErrAllowListSignature) {
				t.Fatalf("got %v, want a signature refusal", err)
			}
		})
	}
	// A list that verifies but is invalid is refused too (a signer cannot make the kernel load it).
	if _, err := egress.SignAllowList([]byte("serial: 1\nservices:\n  agents:\n    class: D9\n"), ops.skey); err == nil {
		t.Fatal("SignAllowList signed an invalid list")
	}
}

func flipSignatureByte(t *testing.T, signed []byte) []byte {
	t.Helper()
	out := bytes.Clone(signed)
	i := bytes.LastIndex(out, []byte(" ")) + 10 // inside the base64 signature
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}

// TestGateRefusesTamperedFileAtLoad: NewGate fails on a tampered file, so the kernel does not
// start with it.
func TestGateRefusesTamperedFileAtLoad(t *testing.T) {
	ops := newSigner(t, "ops")
	path := filepath.Join(t.TempDir(), "allow.signed")
	signed := ops.sign(t, "serial: 1\nservices:\n  agents:\n    class: D1\n")
	writeFile(t, path, bytes.Replace(signed, []byte("D1"), []byte("D4"), 1))
	_, err := egress.NewGate(egress.GateConfig{File: path, Keys: ops.verifiers})
	if !errors.Is(err, egress.ErrAllowListSignature) || !strings.Contains(err.Error(), path) {
		t.Fatalf("NewGate = %v, want a signature refusal naming the file", err)
	}
	writeFile(t, path, signed)
	if _, err := egress.NewGate(egress.GateConfig{File: path, Keys: ops.verifiers}); err != nil {
		t.Fatalf("NewGate on the signed file: %v", err)
	}
	if _, err := egress.NewGate(egress.GateConfig{File: path}); err == nil {
		t.Fatal("NewGate without keys accepted a file")
	}
}

// countingListener accepts connections on 127.0.0.1:0, answers HTTP 200 and counts accepts.
type countingListener struct {
	srv     *http.Server
	port    uint16
	accepts atomic.Int64
}

func startCounting(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &countingListener{port: uint16(ln.Addr().(*net.TCPAddr).Port)}
	c.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				c.accepts.Add(1)
			}
		},
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.srv.Serve(ln) })
	t.Cleanup(func() { _ = c.srv.Close(); wg.Wait() })
	return c
}

func (c *countingListener) url() string { return "http://127.0.0.1:" + strconv.Itoa(int(c.port)) + "/" }

// TestGateRuntime: a destination outside the allow-list is never contacted (no TCP connection
// reaches it), one on it is; a reload with a new serial takes effect on the next connection and
// drops pooled ones; a tampered or older file is refused and the loaded list stays.
func TestGateRuntime(t *testing.T) {
	ops := newSigner(t, "ops")
	allowed, outside := startCounting(t), startCounting(t)
	path := filepath.Join(t.TempDir(), "allow.signed")
	list := func(serial int, port uint16) string {
		return "serial: " + strconv.Itoa(serial) + "\nservices:\n  otlp:\n    class: D1\n    allow:\n      - cidr: 127.0.0.1/32\n        ports: [" + strconv.Itoa(int(port)) + "]\n"
	}
	writeFile(t, path, ops.sign(t, list(5, allowed.port)))
	var refused []*egress.BlockedError
	var loads []error
	var mu sync.Mutex
	g, err := egress.NewGate(egress.GateConfig{File: path, Keys: ops.verifiers})
	if err != nil {
		t.Fatal(err)
	}
	g.SetHooks(egress.GateHooks{
		Refused: func(_ context.Context, b *egress.BlockedError) { mu.Lock(); refused = append(refused, b); mu.Unlock() },
		Loaded: func(_ context.Context, _ *egress.AllowList, err error) {
			mu.Lock()
			loads = append(loads, err)
			mu.Unlock()
		},
	})
	client := egress.Client(g.Transport(egress.ServiceOTLP, egress.TransportOptions{}))
	get := func(u string) error {
		resp, err := client.Get(u)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		return err
	}
	if err := get(allowed.url()); err != nil {
		t.Fatalf("listed destination: %v", err)
	}
	for range 3 {
		err := get(outside.url())
		b, ok := egress.IsBlocked(err)
		if !ok || b.Reason != egress.ReasonNotListed || b.Service != egress.ServiceOTLP || b.Port != outside.port {
			t.Fatalf("unlisted destination: %v (%+v)", err, b)
		}
	}
	if n := outside.accepts.Load(); n != 0 {
		t.Fatalf("the unlisted destination was contacted %d times", n)
	}
	mu.Lock()
	if len(refused) != 3 {
		t.Fatalf("%d refusals reported, want 3", len(refused))
	}
	mu.Unlock()

	// A tampered new version is refused; the loaded list stays.
	writeFile(t, path, bytes.Replace(ops.sign(t, list(6, allowed.port)), []byte(strconv.Itoa(int(allowed.port))), []byte(strconv.Itoa(int(outside.port))), 1))
	if ok, err := g.Reload(t.Context()); ok || !errors.Is(err, egress.ErrAllowListSignature) {
		t.Fatalf("Reload of a tampered file = %v, %v", ok, err)
	}
	if g.AllowList().Serial != 5 {
		t.Fatalf("serial %d after a refused reload", g.AllowList().Serial)
	}
	if _, ok := egress.IsBlocked(get(outside.url())); !ok || outside.accepts.Load() != 0 {
		t.Fatal("a refused reload opened the unlisted destination")
	}

	// A properly signed new version moves the allowance: the old destination's pooled
	// connection is dropped and it is refused from now on.
	writeFile(t, path, ops.sign(t, list(7, outside.port)))
	if ok, err := g.Reload(t.Context()); !ok || err != nil {
		t.Fatalf("Reload of a signed file = %v, %v", ok, err)
	}
	if err := get(outside.url()); err != nil {
		t.Fatalf("newly listed destination: %v", err)
	}
	if _, ok := egress.IsBlocked(get(allowed.url())); !ok {
		t.Fatal("the destination the new list dropped is still reachable")
	}
	// An older list, validly signed, is not loaded again (no rollback to a wider list).
	writeFile(t, path, ops.sign(t, list(6, allowed.port)))
	if ok, err := g.Reload(t.Context()); ok || err == nil || !strings.Contains(err.Error(), "serial 6 is lower") {
		t.Fatalf("Reload of an older serial = %v, %v", ok, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(loads) != 3 || loads[0] == nil || loads[1] != nil || loads[2] == nil {
		t.Fatalf("load reports %v, want refused, loaded, refused", loads)
	}
}

// plainIdentity is an identity.Source with nothing in it: these tests call http agents only.
type plainIdentity struct{}

func (plainIdentity) GetX509SVID() (*x509svid.SVID, error) { return nil, errors.New("none") }
func (plainIdentity) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return nil, errors.New("none")
}
func (plainIdentity) TrustDomain() spiffeid.TrustDomain {
	return spiffeid.RequireTrustDomainFromString("egress.test")
}

// TestAgentTransportGated: calls to agents follow each tenant's rules; a tenant's pooled
// connection never serves a tenant whose rules refuse the destination.
func TestAgentTransportGated(t *testing.T) {
	agent := startCounting(t)
	l := mustList(t, "serial: 1\nservices:\n  agents:\n    class: D0\ntenants:\n  open:\n    agents:\n      class: D1\n      allow:\n        - cidr: 127.0.0.0/8\n")
	l.Source = "test"
	g, err := egress.NewGate(egress.GateConfig{AgentsPolicy: egress.Policy{AllowLoopback: true}, List: l})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := egress.NewAgentTransport(g.AgentsPolicy(), plainIdentity{}, egress.AgentTransportOptions{Gate: g})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	client := egress.Client(tr)
	call := func(tenant string) error {
		req, _ := http.NewRequestWithContext(egress.WithAgent(t.Context(), tenant, "a1"), http.MethodGet, agent.url(), nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		return err
	}
	if err := call("open"); err != nil {
		t.Fatalf("allowed tenant: %v", err)
	}
	b, ok := egress.IsBlocked(call("closed"))
	if !ok || b.Reason != egress.ReasonClass || b.Tenant != "closed" || b.Service != egress.ServiceAgents {
		t.Fatalf("tenant without rules: %+v", b)
	}
	if n := agent.accepts.Load(); n != 1 {
		t.Fatalf("%d connections reached the agent, want the allowed tenant's one", n)
	}
	// Registration-time check follows the same rules.
	if _, err := g.ValidateEndpoint("closed", agent.url()); err == nil {
		t.Fatal("ValidateEndpoint accepted an endpoint the tenant's rules refuse")
	}
	if _, err := g.ValidateEndpoint("open", agent.url()); err != nil {
		t.Fatalf("ValidateEndpoint: %v", err)
	}
	if _, err := g.ValidateEndpoint("closed", "http://agent.example.com/"); err == nil {
		t.Fatal("ValidateEndpoint accepted a name under D0")
	}
}
