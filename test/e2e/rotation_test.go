package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// Rotation under load (issue 7, point 6): two replicas on one PostgreSQL database serve 20
// clients making requests without pause — 10 with bearer JWTs on the plain listener (tokens
// minted on one replica, used on the other), 10 agents over mTLS with SVIDs they renew at
// half-life through POST /v1/identity/svid — while the JWT signing key rotates twice and the CA's
// root rotates, until the old root and the first key have retired. Not one request may fail.
//
// Short delays come from the configuration: keys are published 1 s before they sign (replicas
// reload them every 200 ms), the new root's intermediate issues 3 s after the rotation (replicas
// refresh the CA every second), SVIDs live 1 min, tokens 1 min. The old root retires 1 min 30 s
// after the activation, so the test runs about two minutes.
func TestRotationUnderLoad(t *testing.T) {
	t.Parallel() // two minutes mostly spent waiting for lifetimes to pass: overlapped with the other long tests
	dbURL := services.Postgres(t)
	secrets := t.TempDir()
	shared := func(c *config.Config) {
		c.Database.URL = dbURL
		c.Signing.KEKFile, c.APIKeys.PepperFile = filepath.Join(secrets, "kek.json"), filepath.Join(secrets, "pepper.json")
		withMTLS(c)
		c.Auth.TokenTTL, c.Auth.Leeway = config.Duration(time.Minute), config.Duration(time.Second)
		c.Auth.KeyReloadInterval, c.Auth.KeyPublishDelay = config.Duration(200*time.Millisecond), config.Duration(time.Second)
		c.Identity.SVIDTTL, c.Identity.IntermediateTTL = config.Duration(time.Minute), config.Duration(10*time.Minute)
		c.Identity.RefreshInterval, c.Identity.RootRotationDelay = config.Duration(time.Second), config.Duration(3*time.Second)
	}
	f := newFixture(t, shared)
	b := kerneltest.Start(t, shared)
	replicas := []*kerneltest.Kernel{f.k, b}
	m := mtlsFixtureOf(t, f)
	firstKID := currentKIDs(t, f.k, f.admin)[0]

	var load loadStats
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	apiKey := strings.TrimSpace(strings.TrimPrefix(f.keys["OPERATOR"], "X-API-Key:"))
	for i := range 10 {
		wg.Go(func() { jwtClient(ctx, t, &load, replicas[i%2], replicas[(i+1)%2], apiKey) })
	}
	for i := range 10 {
		a := m.enroll(t, fmt.Sprintf("rot-%02d", i))
		c := newRenewingClient(t, replicas[i%2], a, i%2 == 0)
		wg.Go(func() { c.run(ctx, &load) })
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	kerneltest.WaitFor(t, 30*time.Second, "every client under way", func() bool { return load.jwtOK.Load() >= 10 && load.mtlsOK.Load() >= 10 })

	// The rotations, each through a different replica.
	rotateKey := func(k *kerneltest.Kernel) string {
		resp, body := k.Do(t, "POST", "/v1/admin/signing-keys/rotate", nil, "Authorization: Bearer "+k.Token(t, ""))
		mustStatus(t, resp, body, http.StatusOK)
		return decode[struct {
			Key struct {
				KID string `json:"kid"`
			} `json:"key"`
		}](t, body).Key.KID
	}
	kid1 := rotateKey(f.k)
	resp, body := b.Do(t, "POST", "/v1/identity/ca/rotate", nil, "Authorization: Bearer "+b.Token(t, ""))
	mustStatus(t, resp, body, http.StatusOK)
	rot := decode[struct {
		Root struct {
			ID string `json:"id"`
		} `json:"root"`
		Intermediate struct {
			ActivatesAt time.Time `json:"activates_at"`
		} `json:"intermediate"`
		Retiring []struct {
			RetiresAt time.Time `json:"retires_at"`
		} `json:"retiring"`
	}](t, body)
	if len(rot.Retiring) != 1 {
		t.Fatalf("the CA rotation retires %d roots, want 1: %s", len(rot.Retiring), body)
	}
	kerneltest.WaitFor(t, 30*time.Second, "tokens signed with the first rotated key", func() bool { return load.sawKID(kid1) })
	kid2 := rotateKey(b)
	t.Logf("rotated: signing keys %s → %s → %s; root %s issues from %s, the old one retires at %s",
		firstKID, kid1, kid2, rot.Root.ID, rot.Intermediate.ActivatesAt.Format(time.RFC3339), rot.Retiring[0].RetiresAt.Format(time.RFC3339))

	// Everything rotated through: the second key signs; both replicas serve the new root alone,
	// and present SVIDs chaining to it; the first key has retired.
	deadline := time.Until(rot.Retiring[0].RetiresAt) + time.Minute
	kerneltest.WaitFor(t, deadline, "tokens signed with the second rotated key", func() bool { return load.sawKID(kid2) })
	kerneltest.WaitFor(t, deadline, "every agent's SVID chaining to the new root", func() bool { return load.renewedUnder(rot.Root.ID) >= 10 })
	kerneltest.WaitFor(t, deadline, "the old root out of both replicas' bundles", func() bool {
		for _, k := range replicas {
			if ids := rootsOf(t, k); len(ids) != 1 || ids[0] != rot.Root.ID {
				return false
			}
		}
		return true
	})
	for _, k := range replicas {
		kerneltest.WaitFor(t, time.Minute, "the kernel's SVID chaining to the new root", func() bool {
			sv, err := k.Workload().GetX509SVID()
			return err == nil && rootIDOf(sv.Certificates[len(sv.Certificates)-1].Issuer.CommonName) == rot.Root.ID
		})
	}
	kerneltest.WaitFor(t, deadline, "the first signing key retired", func() bool {
		return keyState(t, f.k, firstKID) == "retired" && keyState(t, f.k, kid1) == "retired"
	})
	// Some more traffic on the rotated state, then the verdict.
	after := load.total()
	kerneltest.WaitFor(t, 30*time.Second, "traffic after the retirements", func() bool { return load.total() >= after+200 })
	stop()
	wg.Wait()

	t.Logf("requests: %d JWT, %d mTLS (%d SVID renewals, %d bundle fetches), %d failed",
		load.jwtOK.Load(), load.mtlsOK.Load(), load.renewals.Load(), load.bundles.Load(), load.failed.Load())
	if n := load.failed.Load(); n != 0 {
		t.Fatalf("%d requests failed during the rotations; the first ones:\n%s", n, strings.Join(load.failures(), "\n"))
	}
	if n := load.renewals.Load(); n < 20 {
		t.Errorf("%d SVID renewals under load, want at least 20 (each agent at least twice)", n)
	}

	// Recorded: two key rotations, the root rotation and the old root's removal.
	admin := "Authorization: Bearer " + f.k.Token(t, "")
	for _, kid := range []string{kid1, kid2} {
		if n := countAudit(t, f.k, admin, "token.signing_key.rotate", "signing-keys/"+kid); n != 1 {
			t.Errorf("%d audit records of the rotation to %s, want 1", n, kid)
		}
	}
	td := f.k.Config.Identity.TrustDomain
	for _, action := range []string{"identity.ca.rotate", "identity.ca.retire"} {
		if n := countAudit(t, f.k, admin, action, "identity/ca/"+td); n != 1 {
			t.Errorf("%d audit records of %s, want 1", n, action)
		}
	}
}

// loadStats is what the clients did, shared by all of them.
type loadStats struct {
	jwtOK, mtlsOK, renewals, bundles, failed atomic.Int64

	mu    sync.Mutex
	first []string          // the first failures, for the report
	kids  map[string]bool   // kids of the tokens the JWT clients were issued
	under map[string]string // agent → the root its current (renewed) SVID chains to
}

func (s *loadStats) total() int64 { return s.jwtOK.Load() + s.mtlsOK.Load() }

func (s *loadStats) fail(format string, args ...any) {
	s.failed.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.first) < 20 {
		s.first = append(s.first, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	}
}

func (s *loadStats) failures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.first...)
}

func (s *loadStats) sawKID(kid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kids[kid]
}

func (s *loadStats) addKID(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kids == nil {
		s.kids = map[string]bool{}
	}
	s.kids[kid] = true
}

// renewed records that agent's current SVID now chains to root.
func (s *loadStats) renewed(agent, root string) {
	s.renewals.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.under == nil {
		s.under = map[string]string{}
	}
	s.under[agent] = root
}

func (s *loadStats) renewedUnder(root string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.under {
		if r == root {
			n++
		}
	}
	return n
}

// jwtClient exchanges the API key for a token on mint every 300 ms and uses the latest one on
// use, as fast as it can, until ctx ends.
func jwtClient(ctx context.Context, t *testing.T, s *loadStats, mint, use *kerneltest.Kernel, apiKey string) {
	hc := &http.Client{Transport: kerneltest.NewContractTransport(t, http.DefaultTransport.(*http.Transport).Clone()), Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	var token string
	var minted time.Time
	for ctx.Err() == nil {
		if token == "" || time.Since(minted) > 300*time.Millisecond {
			status, body, err := send(ctx, hc, "POST", mint.URL+"/v1/auth/token", map[string]string{"api_key": apiKey}, "")
			switch {
			case ctx.Err() != nil:
				return
			case err != nil || status != http.StatusOK:
				s.fail("token on %s: %d %v %s", mint.Addr(), status, err, body)
				continue
			}
			var tr struct {
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal(body, &tr); err != nil {
				s.fail("token response %s: %v", body, err)
				continue
			}
			token, minted = tr.AccessToken, time.Now()
			s.addKID(kidOfToken(token))
			s.jwtOK.Add(1)
		}
		status, body, err := send(ctx, hc, "GET", use.URL+"/v1/agents?limit=1", nil, "Bearer "+token)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil || status != http.StatusOK:
			s.fail("GET /v1/agents on %s with a token of %s (kid %s): %d %v %s", use.Addr(), mint.Addr(), kidOfToken(token), status, err, body)
		default:
			s.jwtOK.Add(1)
		}
		pause(ctx)
	}
}

// pause spaces a client's requests a little, so twenty of them leave the two shared CPUs some
// room for the kernels' own work.
func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Millisecond):
	}
}

func send(ctx context.Context, hc *http.Client, method, url string, body any, bearer string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func kidOfToken(raw string) string {
	seg, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return ""
	}
	var h struct {
		KID string `json:"kid"`
	}
	_ = json.Unmarshal(b, &h)
	return h.KID
}

// renewingClient is an agent on one replica's mTLS listener: it heartbeats continuously with its
// current SVID, renews it at half its lifetime through POST /v1/identity/svid (authenticated by
// the current one), and trusts the bundle it polls from the kernel every 250 ms, as an agent
// following the SPIFFE bundle's refresh would.
type renewingClient struct {
	k      *kerneltest.Kernel
	agent  string
	td     spiffeid.TrustDomain
	cert   atomic.Pointer[tls.Certificate]
	bundle atomic.Pointer[x509bundle.Bundle]
	hc     *http.Client
}

func newRenewingClient(t *testing.T, k *kerneltest.Kernel, a enrolled, keepAlive bool) *renewingClient {
	t.Helper()
	b, _, _ := bundleOf(t, k)
	sv, err := k.Workload().GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	c := &renewingClient{k: k, agent: a.agent, td: b.TrustDomain()}
	c.cert.Store(a.svid.tlsCert())
	c.bundle.Store(x509bundle.FromX509Authorities(b.TrustDomain(), b.X509Authorities()))
	cfg := tlsconfig.TLSClientConfig(c, tlsconfig.AuthorizeID(sv.ID))
	cfg.MinVersion = tls.VersionTLS13
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.cert.Load(), nil }
	// Half the agents keep their connections, the other half make a handshake per request.
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 2}
	t.Cleanup(tr.CloseIdleConnections)
	c.hc = &http.Client{Transport: kerneltest.NewContractTransport(t, tr), Timeout: 30 * time.Second}
	return c
}

// GetX509BundleForTrustDomain implements x509bundle.Source with the latest bundle polled.
func (c *renewingClient) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != c.td {
		return nil, fmt.Errorf("no bundle for %s", td)
	}
	return c.bundle.Load(), nil
}

func (c *renewingClient) run(ctx context.Context, s *loadStats) {
	plain := &http.Client{Timeout: 30 * time.Second}
	var polled time.Time
	for ctx.Err() == nil {
		if time.Since(polled) > 250*time.Millisecond {
			c.pollBundle(ctx, plain, s)
			polled = time.Now()
		}
		if leaf := c.cert.Load().Leaf; !time.Now().Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)) {
			c.renew(ctx, s)
		}
		status, body, err := send(ctx, c.hc, "POST", "https://"+c.k.MTLSAddr()+"/v1/agents/"+c.agent+"/heartbeat", nil, "")
		switch {
		case ctx.Err() != nil:
			return
		case err != nil || status != http.StatusOK:
			s.fail("mTLS heartbeat of %s on %s (SVID %s): %d %v %s", c.agent, c.k.MTLSAddr(), c.cert.Load().Leaf.SerialNumber.Text(16), status, err, body)
		default:
			s.mtlsOK.Add(1)
		}
		pause(ctx)
	}
}

func (c *renewingClient) pollBundle(ctx context.Context, hc *http.Client, s *loadStats) {
	status, body, err := send(ctx, hc, "GET", c.k.URL+"/v1/identity/bundle", nil, "")
	if ctx.Err() != nil {
		return
	}
	if err != nil || status != http.StatusOK {
		s.fail("bundle from %s: %d %v", c.k.Addr(), status, err)
		return
	}
	b, err := spiffebundle.Parse(c.td, body)
	if err != nil {
		s.fail("bundle from %s: %v", c.k.Addr(), err)
		return
	}
	c.bundle.Store(x509bundle.FromX509Authorities(c.td, b.X509Authorities()))
	s.bundles.Add(1)
}

// renew has a new SVID issued over mTLS with the current one and swaps it in.
func (c *renewingClient) renew(ctx context.Context, s *loadStats) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.fail("generate a key: %v", err)
		return
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, priv)
	if err != nil {
		s.fail("create a CSR: %v", err)
		return
	}
	status, body, err := send(ctx, c.hc, "POST", "https://"+c.k.MTLSAddr()+"/v1/identity/svid",
		map[string]any{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, "")
	if ctx.Err() != nil {
		return
	}
	if err != nil || status != http.StatusOK {
		s.fail("SVID renewal of %s on %s: %d %v %s", c.agent, c.k.MTLSAddr(), status, err, body)
		return
	}
	var out svidResponse
	if err := json.Unmarshal(body, &out); err != nil {
		s.fail("SVID renewal response %s: %v", body, err)
		return
	}
	var chain []*x509.Certificate
	for rest := []byte(out.SVIDChain); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			s.fail("SVID renewal of %s: %v", c.agent, err)
			return
		}
		chain = append(chain, cert)
	}
	if len(chain) != 2 {
		s.fail("SVID renewal of %s: a chain of %d certificates", c.agent, len(chain))
		return
	}
	c.cert.Store(svid{certs: chain, key: priv}.tlsCert())
	s.renewed(c.agent, rootIDOf(chain[1].Issuer.CommonName))
}

// rootIDOf is the authority ID in a CA certificate's common name
// ("NOPS Kernel root CA <td> <ulid>" → "ca_<ulid>").
func rootIDOf(cn string) string {
	f := strings.Fields(cn)
	if len(f) == 0 {
		return ""
	}
	return "ca_" + f[len(f)-1]
}

// rootsOf returns the IDs of the roots in a kernel's bundle.
func rootsOf(t *testing.T, k *kerneltest.Kernel) []string {
	t.Helper()
	b, _, _ := bundleOf(t, k)
	var ids []string
	for _, r := range b.X509Authorities() {
		ids = append(ids, rootIDOf(r.Subject.CommonName))
	}
	return ids
}

// currentKIDs lists the kids of the signing keys not retired.
func currentKIDs(t *testing.T, k *kerneltest.Kernel, admin string) []string {
	t.Helper()
	var out []string
	for _, sk := range signingKeys(t, k, admin) {
		if sk.State != "retired" {
			out = append(out, sk.KID)
		}
	}
	return out
}

type signingKeyOut struct {
	KID   string `json:"kid"`
	State string `json:"state"`
}

func signingKeys(t *testing.T, k *kerneltest.Kernel, admin string) []signingKeyOut {
	t.Helper()
	resp, body := k.Do(t, "GET", "/v1/admin/signing-keys", nil, admin)
	mustStatus(t, resp, body, http.StatusOK)
	return decode[struct {
		Items []signingKeyOut `json:"items"`
	}](t, body).Items
}

func keyState(t *testing.T, k *kerneltest.Kernel, kid string) string {
	t.Helper()
	for _, sk := range signingKeys(t, k, "Authorization: Bearer "+k.Token(t, "")) {
		if sk.KID == kid {
			return sk.State
		}
	}
	return ""
}
