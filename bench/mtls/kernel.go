package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/crypto/bcrypt"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/kernel"
)

const password = "bench-admin-password-0123"

// bench is one kernel serving its API over HTTPS (http.tls.cert_file/key_file) and its mTLS
// listener (http.mtls_addr), with an enrolled agent: the same process, database and handler
// behind both listeners.
type bench struct {
	k        *kernel.Kernel
	tlsBase  string // https://<API listener>
	mtlsBase string // https://<mTLS listener>
	tlsCfg   *tls.Config
	mtlsCfg  *tls.Config // presents the agent's SVID, authorizes the kernel's SPIFFE ID
	agentKey string      // X-API-Key of the API key bound to the agent
	agentID  spiffeid.ID // the agent's SPIFFE ID
	close    func()
}

// startBench starts the kernel and enrolls an agent: a tenant, an ADMIN key, an agent, an
// OPERATOR key bound to the agent, and the agent's SVID issued through POST /v1/identity/svid.
func startBench(ctx context.Context) (*bench, error) {
	dir, err := os.MkdirTemp("", "nops-bench-mtls-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*bench, error) { _ = os.RemoveAll(dir); return nil, err }
	roots, err := writeServerChain(dir)
	if err != nil {
		return fail(fmt.Errorf("server certificate: %w", err))
	}
	cfg := config.Default()
	cfg.DataDir, cfg.HTTP.Addr, cfg.HTTP.MTLSAddr = dir, "127.0.0.1:0", "127.0.0.1:0"
	cfg.HTTP.TLS.CertFile, cfg.HTTP.TLS.KeyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	cfg.Auth.BootstrapAdminPassword = password
	cfg.Log.Level = "error"
	// Nothing refused for volume: no per-IP rate limit, caps far above the load.
	cfg.Limits.PerIP = ""
	cfg.Limits.InFlightPerIP, cfg.Limits.InFlightMax, cfg.Limits.InFlightPerTenant = 100000, 100000, 100000
	cfg.Limits.MaxConnsPerIP, cfg.Limits.MaxConns = 100000, 100000
	k, err := kernel.New(ctx, cfg, kernel.Options{Logger: slog.New(slog.DiscardHandler), Out: io.Discard, Version: "bench", Commit: "bench", BcryptCost: bcrypt.MinCost})
	if err != nil {
		return fail(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- k.Run(rctx) }()
	b := &bench{k: k, tlsBase: "https://" + k.Addr(), mtlsBase: "https://" + k.MTLSAddr()}
	b.close = func() {
		cancel()
		<-done
		_ = k.Close()
		_ = os.RemoveAll(dir)
	}
	b.tlsCfg = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots}
	if err := b.enroll(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// writeServerChain writes the API listener's certificate: an ECDSA P-256 leaf for 127.0.0.1
// signed by an intermediate of a root, the same shape as the kernel's SVID on the mTLS listener
// (P-256 leaf and intermediate sent, root known to the client), so that both handshakes verify
// the same chain length with the same algorithms. It returns the root as the client's pool.
func writeServerChain(dir string) (*x509.CertPool, error) {
	now := time.Now()
	mk := func(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		if err != nil {
			return nil, nil, err
		}
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.BasicConstraintsValid = true
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			return nil, nil, err
		}
		c, err := x509.ParseCertificate(der)
		return c, key, err
	}
	ca := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	}
	root, rootKey, err := mk(ca("bench root"), nil, nil)
	if err != nil {
		return nil, err
	}
	inter, interKey, err := mk(ca("bench intermediate"), root, rootKey)
	if err != nil {
		return nil, err
	}
	leaf, leafKey, err := mk(&x509.Certificate{
		Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, inter, interKey)
	if err != nil {
		return nil, err
	}
	var chain bytes.Buffer
	for _, c := range []*x509.Certificate{leaf, inter} {
		_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), chain.Bytes(), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "server.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool, nil
}

// setupClient is the HTTPS client of the setup requests and of the SVID phases.
func (b *bench) setupClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: b.tlsCfg.Clone()}, Timeout: 30 * time.Second}
}

// call sends one JSON request to the API listener and decodes a 2xx answer into out.
func call(ctx context.Context, c *http.Client, method, url string, body, out any, headers ...string) error {
	var rd io.Reader
	if body != nil {
		js, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	js, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, js)
	}
	if out != nil {
		return json.Unmarshal(js, out)
	}
	return nil
}

// svidAnswer is the answer of POST /v1/identity/svid.
type svidAnswer struct {
	SPIFFEID  string `json:"spiffe_id"`
	SVIDChain string `json:"svid_chain"`
	Serial    string `json:"serial"`
	Bundle    string `json:"bundle"`
}

func (b *bench) enroll(ctx context.Context) error {
	c := b.setupClient()
	defer c.CloseIdleConnections()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := call(ctx, c, "POST", b.tlsBase+"/v1/auth/token", map[string]string{"username": "admin", "password": password}, &tok); err != nil {
		return err
	}
	admin := []string{"Authorization", "Bearer " + tok.AccessToken}
	var ten struct {
		ID string `json:"id"`
	}
	if err := call(ctx, c, "POST", b.tlsBase+"/v1/tenants", map[string]string{"name": "bench", "display_name": "Bench"}, &ten, admin...); err != nil {
		return err
	}
	var key struct {
		Secret string `json:"secret"`
	}
	if err := call(ctx, c, "POST", b.tlsBase+"/v1/api-keys?tenant="+ten.ID, map[string]string{"name": "bench-admin", "role": "ADMIN"}, &key, admin...); err != nil {
		return err
	}
	var agent struct {
		ID string `json:"id"`
	}
	spec := map[string]any{"name": "bench", "version": "v1.0.0", "endpoint": "https://agents.example.com/bench", "criticality": "essential",
		"capabilities": []map[string]any{{"name": "text.summarize", "description": "x", "input_schema": map[string]any{"type": "object"}}}}
	if err := call(ctx, c, "POST", b.tlsBase+"/v1/agents", spec, &agent, "X-API-Key", key.Secret); err != nil {
		return err
	}
	var agentKey struct {
		Secret string `json:"secret"`
	}
	if err := call(ctx, c, "POST", b.tlsBase+"/v1/api-keys", map[string]string{"name": "bench-agent", "role": "OPERATOR", "agent_id": agent.ID}, &agentKey, "X-API-Key", key.Secret); err != nil {
		return err
	}
	b.agentKey = agentKey.Secret
	priv, csr, err := newCSR()
	if err != nil {
		return err
	}
	var sv svidAnswer
	if err := call(ctx, c, "POST", b.tlsBase+"/v1/identity/svid", map[string]string{"csr": csr}, &sv, "X-API-Key", b.agentKey); err != nil {
		return err
	}
	if b.agentID, err = spiffeid.FromString(sv.SPIFFEID); err != nil {
		return err
	}
	cert := tls.Certificate{PrivateKey: priv}
	for rest := []byte(sv.SVIDChain); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		cert.Certificate = append(cert.Certificate, blk.Bytes)
	}
	if len(cert.Certificate) == 0 {
		return fmt.Errorf("no certificate in the issued SVID chain %q", sv.SVIDChain)
	}
	bundle, err := x509bundle.Parse(b.agentID.TrustDomain(), []byte(sv.Bundle))
	if err != nil {
		return fmt.Errorf("the bundle of the SVID answer: %w", err)
	}
	kernelSVID, err := b.k.Workload().GetX509SVID()
	if err != nil {
		return err
	}
	// As a workload does (and the e2e tests): the server must be the kernel's SPIFFE ID under
	// the bundle; the client presents its SVID.
	b.mtlsCfg = tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(kernelSVID.ID))
	b.mtlsCfg.MinVersion = tls.VersionTLS13
	b.mtlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return nil
}

// newCSR returns a fresh P-256 key and a PEM certificate request of it.
func newCSR() (*ecdsa.PrivateKey, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, "", err
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// signAlone is the baseline of the issuance phases: the kernel's identity CA signing a CSR in
// the process (identity.DecodeCSR, then CA.Sign, which checks the request and issues the leaf),
// with no HTTP, authentication or audit record.
func (b *bench) signAlone(csrPEM string) error {
	ca := b.k.CA()
	if ca == nil {
		return fmt.Errorf("the kernel has no built-in CA")
	}
	der, err := identity.DecodeCSR(csrPEM)
	if err != nil {
		return err
	}
	_, err = ca.Sign(der, b.agentID, 0)
	return err
}
