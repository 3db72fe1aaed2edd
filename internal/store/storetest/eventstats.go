package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/errs"
)

// RunEventStats checks the event-stats projection's store methods: counting, the latest event
// time, the tenant filter, byte-order sorting, joining InTx and argument checks. open must return
// a fresh migrated store on a database no other test uses.
func RunEventStats(t *testing.T, open func(*testing.T) consumers.EventStatsStore) {
	t.Run("counts", func(t *testing.T) { t.Parallel(); testEventStatsCounts(t, open(t)) })
	t.Run("joins transaction", func(t *testing.T) { t.Parallel(); testEventStatsTransaction(t, open(t)) })
	t.Run("invalid", func(t *testing.T) { t.Parallel(); testEventStatsInvalid(t, open(t)) })
}

func eventStats(t *testing.T, ctx context.Context, s consumers.EventStatsReader, tenant string) []consumers.EventStat {
	t.Helper()
	got, err := s.EventStats(ctx, tenant)
	if err != nil {
		t.Fatalf("EventStats(%q): %v", tenant, err)
	}
	for _, st := range got {
		checkUTC(t, st.Tenant+"/"+st.Type+" LastEventAt", st.LastEventAt)
	}
	return got
}

func testEventStatsCounts(t *testing.T, s consumers.EventStatsStore) {
	ctx := t.Context()
	if got := eventStats(t, ctx, s, ""); len(got) != 0 {
		t.Fatalf("EventStats on an empty store = %v, want none", got)
	}
	const hb, reg = "nops.agent.heartbeat.v1", "nops.agent.registered.v1"
	// base has nanoseconds and a zone: stored times are UTC microseconds. Events arrive out of
	// time order; the latest time wins. "ten_B" sorts before "ten_a" in byte order.
	incs := []struct {
		tenant, typ string
		at          time.Time
	}{
		{"ten_a", hb, base.Add(2 * time.Second)},
		{"ten_a", hb, base},
		{"ten_a", reg, base.Add(time.Minute)},
		{"ten_B", hb, base.Add(-time.Hour)},
		{"ten_a", hb, base.Add(time.Second)},
	}
	for _, in := range incs {
		if err := s.IncrementEventStats(ctx, in.tenant, in.typ, in.at); err != nil {
			t.Fatalf("IncrementEventStats(%s, %s): %v", in.tenant, in.typ, err)
		}
	}
	all := []consumers.EventStat{
		{Tenant: "ten_B", Type: hb, Count: 1, LastEventAt: stored(base.Add(-time.Hour))},
		{Tenant: "ten_a", Type: hb, Count: 3, LastEventAt: stored(base.Add(2 * time.Second))},
		{Tenant: "ten_a", Type: reg, Count: 1, LastEventAt: stored(base.Add(time.Minute))},
	}
	tests := []struct {
		tenant string
		want   []consumers.EventStat
	}{
		{"", all},
		{"ten_a", all[1:]},
		{"ten_B", all[:1]},
		{"ten_b", nil},
		{"ten_none", nil},
	}
	for _, tt := range tests {
		got := eventStats(t, ctx, s, tt.tenant)
		if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("EventStats(%q) (-want +got):\n%s", tt.tenant, diff)
		}
	}
}

func testEventStatsTransaction(t *testing.T, s consumers.EventStatsStore) {
	ctx := t.Context()
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := s.IncrementEventStats(ctx, "ten_a", "nops.agent.heartbeat.v1", base); err != nil {
			return err
		}
		if got := eventStats(t, ctx, s, "ten_a"); len(got) != 1 || got[0].Count != 1 {
			t.Errorf("EventStats inside the transaction = %+v, want its own row", got)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want %v", err, boom)
	}
	if got := eventStats(t, ctx, s, ""); len(got) != 0 {
		t.Fatalf("EventStats after a rolled-back increment = %+v, want none", got)
	}
}

func testEventStatsInvalid(t *testing.T, s consumers.EventStatsStore) {
	tests := []struct {
		name, tenant, typ string
		at                time.Time
	}{
		{"empty tenant", "", "nops.agent.heartbeat.v1", base},
		{"tenant with a dot", "ten.a", "nops.agent.heartbeat.v1", base},
		{"empty type", "ten_a", "", base},
		{"zero time", "ten_a", "nops.agent.heartbeat.v1", time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.IncrementEventStats(t.Context(), tt.tenant, tt.typ, tt.at)
			if errs.CodeOf(err) != errs.Invalid {
				t.Fatalf("IncrementEventStats = %v, want code %q", err, errs.Invalid)
			}
		})
	}
}
