package identity

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The path segments of the kernel's SPIFFE IDs.
const (
	segTenant = "tenant"
	segAgent  = "agent"
	segKernel = "kernel"
)

// ParseTrustDomain validates a configured trust domain ("nops.local", or "spiffe://nops.local").
func ParseTrustDomain(s string) (spiffeid.TrustDomain, error) {
	if strings.Contains(s, "://") {
		// go-spiffe would take the trust domain of any SPIFFE ID; a path here is a mistake.
		id, err := spiffeid.FromString(s)
		if err != nil {
			return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: %w", s, err)
		}
		if id.Path() != "" {
			return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: must not have a path", s)
		}
		return id.TrustDomain(), nil
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: %w", s, err)
	}
	return td, nil
}

// AgentID returns the SPIFFE ID of an agent: spiffe://<td>/tenant/<tenant>/agent/<agent>.
func AgentID(td spiffeid.TrustDomain, tenant, agent string) (spiffeid.ID, error) {
	if tenant == "" || agent == "" {
		return spiffeid.ID{}, fmt.Errorf("agent spiffe id: tenant and agent must not be empty")
	}
	id, err := spiffeid.FromSegments(td, segTenant, tenant, segAgent, agent)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent spiffe id of %s/%s: %w", tenant, agent, err)
	}
	return id, nil
}

// KernelID returns the SPIFFE ID of a kernel node: spiffe://<td>/kernel/<node>.
func KernelID(td spiffeid.TrustDomain, node string) (spiffeid.ID, error) {
	if node == "" {
		return spiffeid.ID{}, fmt.Errorf("kernel spiffe id: node must not be empty")
	}
	id, err := spiffeid.FromSegments(td, segKernel, node)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("kernel spiffe id of node %s: %w", node, err)
	}
	return id, nil
}

// ParseAgentID returns the tenant and agent an agent SPIFFE ID of td names. Any other ID — of
// another trust domain, a kernel's, a path with more or fewer segments — is an error.
func ParseAgentID(td spiffeid.TrustDomain, id spiffeid.ID) (tenant, agent string, err error) {
	if !id.MemberOf(td) {
		return "", "", fmt.Errorf("spiffe id %s is not of trust domain %s", id, td)
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 4 || seg[0] != segTenant || seg[2] != segAgent || seg[1] == "" || seg[3] == "" {
		return "", "", fmt.Errorf("spiffe id %s is not an agent's (/tenant/<t>/agent/<id>)", id)
	}
	return seg[1], seg[3], nil
}
