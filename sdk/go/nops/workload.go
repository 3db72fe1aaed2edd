package nops

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// WorkloadSVIDs is an SVIDSource that takes the agent's X.509-SVID and bundle from a SPIFFE
// Workload API (a SPIRE agent's socket), for kernels on SPIRE (identity.spiffe_endpoint_socket).
// The Workload API pushes renewals and bundle changes; each handshake uses the latest.
type WorkloadSVIDs struct {
	addr string

	mu  sync.Mutex
	src *workloadapi.X509Source
}

// NewWorkloadSVIDs returns a source reading the Workload API at addr ("unix:///path" or
// "tcp://host:port"; "" for the SPIFFE_ENDPOINT_SOCKET environment variable).
func NewWorkloadSVIDs(addr string) *WorkloadSVIDs { return &WorkloadSVIDs{addr: addr} }

// Start connects, waits for the first SVID, and checks that it is agentID's
// (spiffe://<td>/tenant/<tenant>/agent/<agentID>): the kernel refuses any other. The source is
// closed when ctx ends.
func (w *WorkloadSVIDs) Start(ctx context.Context, agentID string) error {
	var opts []workloadapi.X509SourceOption
	if w.addr != "" {
		opts = append(opts, workloadapi.WithClientOptions(workloadapi.WithAddr(w.addr)))
	}
	src, err := workloadapi.NewX509Source(ctx, opts...)
	if err != nil {
		return fmt.Errorf("nops: workload api: %w", err)
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		_ = src.Close()
		return fmt.Errorf("nops: workload api: %w", err)
	}
	if !strings.HasSuffix(svid.ID.Path(), "/agent/"+agentID) {
		_ = src.Close()
		return fmt.Errorf("nops: the workload api's svid %s is not agent %s's", svid.ID, agentID)
	}
	w.mu.Lock()
	w.src = src
	w.mu.Unlock()
	go func() {
		<-ctx.Done()
		_ = src.Close()
	}()
	return nil
}

// Current returns the latest SVID the Workload API pushed and its trust domain's bundle.
func (w *WorkloadSVIDs) Current() (*tls.Certificate, *x509bundle.Bundle, error) {
	w.mu.Lock()
	src := w.src
	w.mu.Unlock()
	if src == nil {
		return nil, nil, errors.New("nops: no SVID yet")
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, nil, err
	}
	b, err := src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return nil, nil, err
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, b, nil
}
