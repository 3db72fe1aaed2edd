package nops_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/sdk/go/nops"
	"github.com/nops-kernel/nops/sdk/go/nops/api"
)

// TestSVIDAgent runs an https agent on an SVID the kernel issued: the kernel invokes it over
// mTLS while the SVID is renewed at half its (short) lifetime, with no failed call; the agent
// calls the kernel's mTLS listener with the same renewing SVID as its only credential; and the
// agent refuses a client that is not a kernel.
func TestSVIDAgent(t *testing.T) {
	k := kerneltest.Start(t, func(c *config.Config) { c.HTTP.MTLSAddr = "127.0.0.1:0" })
	f := &fixture{k: k, super: "Authorization: Bearer " + k.Token(t, "")}
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]string{"name": "sdk"}, f.super)
	mustStatus(t, resp, body, http.StatusCreated)
	f.tenant = decode[struct {
		ID string `json:"id"`
	}](t, body).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+f.tenant, map[string]any{"name": "sdk-admin", "role": "ADMIN"}, f.super)
	mustStatus(t, resp, body, http.StatusCreated)
	f.apiKey = decode[struct {
		Secret string `json:"secret"`
	}](t, body).Secret

	c := f.client(t, nops.Options{})
	src := nops.NewKernelSVIDs(c, nops.KernelSVIDOptions{TTL: 6 * time.Second, NameAgent: true})
	a, err := nops.NewAgent(c, nops.AgentConfig{
		Name: "tls-agent", Version: "1.0.0", HeartbeatInterval: 100 * time.Millisecond, SVID: src,
		Capabilities: []nops.Capability{echoCapability(nil)},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := startAgent(t, a)
	resp, body = k.Do(t, "GET", "/v1/agents/"+a.ID(), nil, "X-API-Key: "+f.apiKey)
	mustStatus(t, resp, body, http.StatusOK)
	endpoint := decode[struct {
		Endpoint string `json:"endpoint"`
	}](t, body).Endpoint
	if !strings.HasPrefix(endpoint, "https://") {
		t.Fatalf("endpoint %s, want https", endpoint)
	}
	kerneltest.WaitFor(t, 20*time.Second, "the first SVID", func() bool {
		_, _, err := src.Current()
		return err == nil
	})
	cert, _, err := src.Current()
	if err != nil {
		t.Fatal(err)
	}
	id, err := x509svid.IDFromCert(cert.Leaf)
	if err != nil || !strings.HasSuffix(id.Path(), "/agent/"+a.ID()) {
		t.Fatalf("svid %v (%v), want the agent's", id, err)
	}

	// Over mTLS to the kernel, the SVID alone authenticates the agent.
	tr := &http.Transport{TLSClientConfig: nops.ClientTLSConfig(src), DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	mc, err := nops.NewClient(nops.Options{BaseURL: "https://" + k.MTLSAddr(),
		HTTPClient: &http.Client{Transport: kerneltest.NewContractTransport(t, tr), Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	heartbeat := func() error {
		r, err := mc.API().HeartbeatAgentWithResponse(context.Background(), a.ID(), nil, api.Load{})
		if err != nil {
			return err
		}
		if r.JSON200 == nil {
			return &nops.Error{Status: r.StatusCode(), Detail: string(r.Body)}
		}
		return nil
	}
	if err := heartbeat(); err != nil {
		t.Fatalf("heartbeat over mTLS: %v", err)
	}

	// Continuous invocations through the kernel while the SVID renews twice.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := c.Invoke(context.Background(), "echo", []byte(`{"message":"tls"}`), nil); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	kerneltest.WaitFor(t, 60*time.Second, "two renewals", func() bool { return src.Renewals() >= 2 })
	close(done)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d calls failed, %d succeeded, across renewals; first: %v", failed.Load(), ok.Load(), firstErr.Load())
	}
	renewed, _, _ := src.Current()
	if renewed.Leaf.SerialNumber.Cmp(cert.Leaf.SerialNumber) == 0 {
		t.Fatalf("the SVID was not replaced")
	}
	if err := heartbeat(); err != nil {
		t.Fatalf("heartbeat over mTLS with the renewed SVID: %v", err)
	}

	// A client that is not a kernel (here: the agent's own SVID) is refused by the agent.
	agentTLS := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, //nolint:gosec // the test looks at the refusal only
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return renewed, nil }}
	direct := &http.Client{Transport: &http.Transport{TLSClientConfig: agentTLS}, Timeout: 10 * time.Second}
	if r, err := direct.Post(endpoint+"/invoke/echo", "application/json", strings.NewReader(`{"message":"x"}`)); err == nil {
		_ = r.Body.Close()
		t.Fatalf("the agent answered %d to a client that is not a kernel", r.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("agent run: %v", err)
	}
}
