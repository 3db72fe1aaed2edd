package registry_test

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/registry"
)

func ptr[T any](v T) *T { return &v }

func TestHeartbeatInputValidate(t *testing.T) {
	tests := []struct {
		name string
		in   registry.HeartbeatInput
		bad  []string
	}{
		{"nothing reported", registry.HeartbeatInput{}, nil},
		{"everything at lower bounds", registry.HeartbeatInput{
			InFlight: ptr[int64](0), P50Ms: ptr(0.0), P95Ms: ptr(0.0), ErrorRate: ptr(0.0), FreeCapacity: ptr[int64](0),
		}, nil},
		{"everything at upper bounds", registry.HeartbeatInput{
			InFlight: ptr[int64](registry.MaxInFlight), P50Ms: ptr(float64(registry.MaxLatencyMs)), P95Ms: ptr(float64(registry.MaxLatencyMs)),
			ErrorRate: ptr(1.0), FreeCapacity: ptr[int64](registry.MaxFreeCapacity),
		}, nil},
		{"typical", registry.HeartbeatInput{InFlight: ptr[int64](3), P50Ms: ptr(12.5), P95Ms: ptr(80.0), ErrorRate: ptr(0.01)}, nil},
		{"only p95", registry.HeartbeatInput{P95Ms: ptr(5.0)}, nil},
		{"negative in flight", registry.HeartbeatInput{InFlight: ptr[int64](-1)}, []string{"body.in_flight"}},
		{"in flight too big", registry.HeartbeatInput{InFlight: ptr[int64](registry.MaxInFlight + 1)}, []string{"body.in_flight"}},
		{"negative free capacity", registry.HeartbeatInput{FreeCapacity: ptr[int64](-5)}, []string{"body.free_capacity"}},
		{"free capacity too big", registry.HeartbeatInput{FreeCapacity: ptr[int64](math.MaxInt64)}, []string{"body.free_capacity"}},
		{"negative p50", registry.HeartbeatInput{P50Ms: ptr(-0.5)}, []string{"body.p50_ms"}},
		{"p50 too big", registry.HeartbeatInput{P50Ms: ptr(float64(registry.MaxLatencyMs) + 1)}, []string{"body.p50_ms"}},
		{"p50 NaN", registry.HeartbeatInput{P50Ms: ptr(math.NaN())}, []string{"body.p50_ms"}},
		{"p95 infinite", registry.HeartbeatInput{P95Ms: ptr(math.Inf(1))}, []string{"body.p95_ms"}},
		{"p95 below p50", registry.HeartbeatInput{P50Ms: ptr(10.0), P95Ms: ptr(9.9)}, []string{"body.p95_ms"}},
		{"error rate negative", registry.HeartbeatInput{ErrorRate: ptr(-0.01)}, []string{"body.error_rate"}},
		{"error rate above one", registry.HeartbeatInput{ErrorRate: ptr(1.01)}, []string{"body.error_rate"}},
		{"error rate NaN", registry.HeartbeatInput{ErrorRate: ptr(math.NaN())}, []string{"body.error_rate"}},
		{"all bad", registry.HeartbeatInput{
			InFlight: ptr[int64](-1), P50Ms: ptr(-1.0), P95Ms: ptr(math.NaN()), ErrorRate: ptr(2.0), FreeCapacity: ptr[int64](-1),
		}, []string{"body.in_flight", "body.free_capacity", "body.p50_ms", "body.p95_ms", "body.error_rate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			if tt.bad == nil {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if diff := cmp.Diff(tt.bad, fieldNames(t, err)); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHeartbeatInputLoadCopies(t *testing.T) {
	in := registry.HeartbeatInput{InFlight: ptr[int64](2), P50Ms: ptr(1.0), P95Ms: ptr(2.0), ErrorRate: ptr(0.5), FreeCapacity: ptr[int64](7)}
	l := in.Load()
	want := registry.Load{InFlight: ptr[int64](2), P50Ms: ptr(1.0), P95Ms: ptr(2.0), ErrorRate: ptr(0.5), FreeCapacity: ptr[int64](7)}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	*in.InFlight = 99
	if *l.InFlight != 2 {
		t.Error("Load shares pointers with the input")
	}
	if diff := cmp.Diff(registry.Load{}, registry.HeartbeatInput{}.Load()); diff != "" {
		t.Errorf("empty Load (-want +got):\n%s", diff)
	}
}

func TestHeartbeatResultStatusChange(t *testing.T) {
	r := registry.HeartbeatResult{TenantID: "ten_1", AgentID: "agt_1", At: t0, Previous: registry.StatusHealthy, Current: registry.StatusHealthy}
	if _, ok := r.StatusChange(); ok {
		t.Error("healthy → healthy reported as a change")
	}
	r.Previous = registry.StatusZombie
	c, ok := r.StatusChange()
	want := registry.StatusChange{TenantID: "ten_1", AgentID: "agt_1", From: registry.StatusZombie, To: registry.StatusHealthy, HeartbeatAt: t0, At: t0}
	if diff := cmp.Diff(want, c); !ok || diff != "" {
		t.Errorf("StatusChange ok=%v (-want +got):\n%s", ok, diff)
	}
}
