package registry

import (
	"fmt"
	"time"
)

// Bounds of the load figures a heartbeat may report.
const (
	MaxInFlight     = 1_000_000
	MaxFreeCapacity = 1_000_000
	MaxLatencyMs    = 86_400_000 // one day
)

// HeartbeatInput is the optional load an agent reports with a heartbeat. A nil field was not
// reported.
type HeartbeatInput struct {
	InFlight     *int64
	P50Ms        *float64
	P95Ms        *float64
	ErrorRate    *float64
	FreeCapacity *int64
}

// Validate checks every reported figure: counts in 0..1,000,000, latencies finite in
// 0..86,400,000 ms with p95 ≥ p50 when both are given, error rate finite in [0, 1]. The error is
// one errs.Invalid naming every offending field ("body.p95_ms").
func (in HeartbeatInput) Validate() error {
	var fe fieldErrors
	count := func(name string, v *int64, max int64) {
		if v != nil && (*v < 0 || *v > max) {
			fe.add(name, fmt.Sprintf("must be between 0 and %d", max))
		}
	}
	latency := func(name string, v *float64) bool {
		if v != nil && (!finite(*v) || *v < 0 || *v > MaxLatencyMs) {
			fe.add(name, fmt.Sprintf("must be between 0 and %d", MaxLatencyMs))
			return false
		}
		return true
	}
	count("body.in_flight", in.InFlight, MaxInFlight)
	count("body.free_capacity", in.FreeCapacity, MaxFreeCapacity)
	okP50 := latency("body.p50_ms", in.P50Ms)
	okP95 := latency("body.p95_ms", in.P95Ms)
	// Percentiles of one distribution are ordered; a reversed pair means a broken reporter.
	if okP50 && okP95 && in.P50Ms != nil && in.P95Ms != nil && *in.P95Ms < *in.P50Ms {
		fe.add("body.p95_ms", "must not be below p50_ms")
	}
	if r := in.ErrorRate; r != nil && (!finite(*r) || *r < 0 || *r > 1) {
		fe.add("body.error_rate", "must be between 0 and 1")
	}
	return fe.err()
}

// Load returns the figures as stored.
func (in HeartbeatInput) Load() Load {
	return Load{
		InFlight:     clonePtr(in.InFlight),
		P50Ms:        clonePtr(in.P50Ms),
		P95Ms:        clonePtr(in.P95Ms),
		ErrorRate:    clonePtr(in.ErrorRate),
		FreeCapacity: clonePtr(in.FreeCapacity),
	}
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// HeartbeatResult is the outcome of Service.Heartbeat: enough for an agent.heartbeat event and,
// when the stored status changed, an agent.status_changed event.
type HeartbeatResult struct {
	TenantID string
	AgentID  string
	At       time.Time // the new HeartbeatAt
	Load     Load
	Previous Status // the stored status before the heartbeat
	Current  Status // always StatusHealthy: a heartbeat has age zero
}

// StatusChange returns the status change the heartbeat caused, if any.
func (r HeartbeatResult) StatusChange() (StatusChange, bool) {
	if r.Previous == r.Current {
		return StatusChange{}, false
	}
	return StatusChange{
		TenantID:    r.TenantID,
		AgentID:     r.AgentID,
		From:        r.Previous,
		To:          r.Current,
		HeartbeatAt: r.At,
		At:          r.At,
	}, true
}
