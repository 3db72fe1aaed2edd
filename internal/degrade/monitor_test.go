package degrade_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/degrade"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// recorder is the Monitor's Record and Publish: it keeps what was recorded and published and
// fails while told to.
type recorder struct {
	mu         sync.Mutex
	failRecord bool
	recorded   []string // "mode change trigger event=<bool>"
	published  []string
}

func (r *recorder) record(_ context.Context, p events.DegradationChanged, event bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := p.Validate(); err != nil {
		return err
	}
	if r.failRecord {
		return errors.New("database refuses writes")
	}
	s := p.Mode + " " + p.Change + " " + p.Trigger
	if !event {
		s += " (audit only)"
	}
	r.recorded = append(r.recorded, s)
	return nil
}

func (r *recorder) publish(_ context.Context, p events.DegradationChanged) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.published = append(r.published, p.Mode+" "+p.Change+" "+p.Trigger)
	return nil
}

type fixture struct {
	m      *degrade.Monitor
	rec    *recorder
	bad    map[degrade.Mode]bool
	manual map[degrade.Mode]bool
	now    time.Time
}

func newMonitor(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{rec: &recorder{}, bad: map[degrade.Mode]bool{}, manual: map[degrade.Mode]bool{}, now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	signals := map[degrade.Mode]func(context.Context) degrade.Signal{}
	for _, mode := range degrade.Modes {
		signals[mode] = func(context.Context) degrade.Signal {
			return degrade.Signal{Bad: f.bad[mode], Reason: string(mode) + " probe failing"}
		}
	}
	m, err := degrade.New(degrade.Options{
		Kernel:        "kernel-test",
		Signals:       signals,
		Manual:        func(_ context.Context, mode degrade.Mode) bool { return f.manual[mode] },
		Record:        f.rec.record,
		Publish:       f.rec.publish,
		RecoverRounds: 3,
		RetryAfter:    7 * time.Second,
		Now:           func() time.Time { f.now = f.now.Add(time.Second); return f.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	return f
}

func (f *fixture) active() map[degrade.Mode]string {
	out := map[degrade.Mode]string{}
	for _, s := range f.m.Status().Modes {
		if s.Active {
			out[s.Mode] = s.Trigger
		}
	}
	return out
}

func TestMonitorEntersAndLeavesWithHysteresis(t *testing.T) {
	f := newMonitor(t)
	ctx := context.Background()
	f.m.Round(ctx)
	if got := f.active(); len(got) != 0 {
		t.Fatalf("active modes with healthy signals: %v", got)
	}
	f.bad[degrade.BusDown] = true
	f.m.Round(ctx)
	if diff := cmp.Diff(map[degrade.Mode]string{degrade.BusDown: "auto"}, f.active()); diff != "" {
		t.Fatalf("after a bad bus round (-want +got):\n%s", diff)
	}
	st := f.m.Status()
	if !st.Degraded() || st.Modes[1].Reason != "bus_down probe failing" || st.Modes[1].Since.IsZero() {
		t.Errorf("status %+v", st)
	}
	f.bad[degrade.BusDown] = false
	for i := range 2 {
		f.m.Round(ctx)
		if !f.m.Status().Active(degrade.BusDown) {
			t.Fatalf("bus_down left after %d healthy rounds, want 3", i+1)
		}
	}
	f.bad[degrade.BusDown] = true // a relapse restarts the count
	f.m.Round(ctx)
	f.bad[degrade.BusDown] = false
	for range 2 {
		f.m.Round(ctx)
	}
	if !f.m.Status().Active(degrade.BusDown) {
		t.Fatal("bus_down left 2 healthy rounds after a relapse")
	}
	f.m.Round(ctx)
	if f.m.Status().Active(degrade.BusDown) {
		t.Fatal("bus_down still active after 3 healthy rounds")
	}
	want := []string{"bus_down entered auto", "bus_down left auto"}
	if diff := cmp.Diff(want, f.rec.recorded); diff != "" {
		t.Errorf("recorded (-want +got):\n%s", diff)
	}
	if len(f.rec.published) != 0 {
		t.Errorf("published on the bus directly while recording worked: %v", f.rec.published)
	}
}

func TestMonitorManualModes(t *testing.T) {
	f := newMonitor(t)
	ctx := context.Background()
	f.manual[degrade.ShedBestEffort] = true
	f.m.Round(ctx)
	if diff := cmp.Diff(map[degrade.Mode]string{degrade.ShedBestEffort: "manual"}, f.active()); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if !f.m.Status().Forced(degrade.ShedBestEffort) || f.m.Status().Forced(degrade.BusDown) {
		t.Error("Forced disagrees with the flags")
	}
	f.manual[degrade.ShedBestEffort] = false
	f.m.Round(ctx) // a manual mode is left at once
	if len(f.active()) != 0 {
		t.Fatalf("still active after the flag went off: %v", f.active())
	}
	want := []string{"shed_best_effort entered manual", "shed_best_effort left manual"}
	if diff := cmp.Diff(want, f.rec.recorded); diff != "" {
		t.Errorf("recorded (-want +got):\n%s", diff)
	}
}

// TestMonitorPublishesWhenTheDatabaseRefuses: read_only means the outbox cannot take the event;
// it goes to the bus directly, and the audit record follows, once, when the database is back.
func TestMonitorPublishesWhenTheDatabaseRefuses(t *testing.T) {
	f := newMonitor(t)
	ctx := context.Background()
	f.rec.failRecord = true
	f.bad[degrade.ReadOnly] = true
	f.m.Round(ctx)
	f.m.Round(ctx)
	if diff := cmp.Diff([]string{"read_only entered auto"}, f.rec.published); diff != "" {
		t.Fatalf("published (-want +got):\n%s", diff)
	}
	f.rec.failRecord = false
	f.bad[degrade.ReadOnly] = false
	for range 3 {
		f.m.Round(ctx)
	}
	want := []string{"read_only entered auto (audit only)", "read_only left auto"}
	if diff := cmp.Diff(want, f.rec.recorded); diff != "" {
		t.Errorf("recorded (-want +got):\n%s", diff)
	}
	if len(f.rec.published) != 1 {
		t.Errorf("published %v, want the entry once", f.rec.published)
	}
}

func TestMonitorAdmit(t *testing.T) {
	f := newMonitor(t)
	ctx := context.Background()
	r := httptest.NewRequest("GET", "/", nil)
	write := degrade.Route{Class: degrade.Critical, Write: true}
	read := degrade.Route{Class: degrade.Essential}
	bestEffort := degrade.Route{Class: degrade.BestEffort}
	for _, row := range []degrade.Route{write, read, bestEffort} {
		if err := f.m.Admit(ctx, r, row); err != nil {
			t.Fatalf("%+v refused in normal mode: %v", row, err)
		}
	}
	f.bad[degrade.ReadOnly] = true
	f.m.Round(ctx)
	err := f.m.Admit(ctx, r, write)
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.Unavailable || e.RetryAfter != 7*time.Second {
		t.Fatalf("a write in read_only: %v, want unavailable with Retry-After 7s", err)
	}
	if err := f.m.Admit(ctx, r, read); err != nil {
		t.Errorf("a read refused in read_only: %v", err)
	}
	if err := f.m.Admit(ctx, r, bestEffort); err != nil {
		t.Errorf("a best-effort read refused in read_only alone: %v", err)
	}
	f.manual[degrade.ShedBestEffort] = true
	f.m.Round(ctx)
	if err := f.m.Admit(ctx, r, bestEffort); !errs.Is(err, errs.Unavailable) {
		t.Errorf("a best-effort request in shed_best_effort: %v, want unavailable", err)
	}
	if err := f.m.Admit(ctx, r, read); err != nil {
		t.Errorf("an essential read refused in shed_best_effort: %v", err)
	}
}

// TestMonitorAdmitAgent: best-effort agents are shed in shed_best_effort mode, and only then;
// critical and essential agents are never shed.
func TestMonitorAdmitAgent(t *testing.T) {
	f := newMonitor(t)
	ctx := context.Background()
	for _, c := range []string{"critical", "essential", "best_effort"} {
		if err := f.m.AdmitAgent(ctx, c); err != nil {
			t.Fatalf("%s agent refused in normal mode: %v", c, err)
		}
	}
	f.bad[degrade.ReadOnly] = true
	f.m.Round(ctx)
	if err := f.m.AdmitAgent(ctx, "best_effort"); err != nil {
		t.Fatalf("best-effort agent refused in read_only alone: %v", err)
	}
	f.manual[degrade.ShedBestEffort] = true
	f.m.Round(ctx)
	var e *errs.Error
	if err := f.m.AdmitAgent(ctx, "best_effort"); !errors.As(err, &e) || e.Code != errs.Unavailable || e.RetryAfter != 7*time.Second {
		t.Fatalf("best-effort agent in shed_best_effort: %v, want unavailable with Retry-After 7s", err)
	}
	for _, c := range []string{"critical", "essential"} {
		if err := f.m.AdmitAgent(ctx, c); err != nil {
			t.Errorf("%s agent refused in shed_best_effort: %v", c, err)
		}
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	if _, err := degrade.New(degrade.Options{Kernel: "k"}); err == nil {
		t.Error("New without Record succeeded")
	}
	rec := func(context.Context, events.DegradationChanged, bool) error { return nil }
	if _, err := degrade.New(degrade.Options{Kernel: "has space", Record: rec}); err == nil {
		t.Error("New with an invalid kernel name succeeded")
	}
}
