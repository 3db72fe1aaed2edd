package degrade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// Mode is a degraded mode.
type Mode string

// The modes, in the order the status lists them.
const (
	ReadOnly       Mode = events.DegradeReadOnly
	BusDown        Mode = events.DegradeBusDown
	ShedBestEffort Mode = events.DegradeShedBestEffort
)

// Modes lists every mode.
var Modes = []Mode{ReadOnly, BusDown, ShedBestEffort}

// FlagKey is the feature flag that enters m manually: "kernel.degrade.read_only", ...
func FlagKey(m Mode) string { return "kernel.degrade." + string(m) }

// Defaults of a zero Options.
const (
	DefaultInterval      = time.Second
	DefaultRecoverRounds = 3
	DefaultRetryAfter    = 5 * time.Second
)

// Signal is one round's observation of a mode's trigger: Bad with a client-safe Reason.
type Signal struct {
	Bad    bool
	Reason string
}

// Options are the Monitor's inputs. A nil signal never enters its mode automatically.
type Options struct {
	// Kernel names this replica in events.
	Kernel string
	// Signals observe each mode's trigger once per round; they must honour ctx's deadline.
	Signals map[Mode]func(ctx context.Context) Signal
	// Manual reports whether the operator forces mode on (the flag kernel.degrade.<mode>); nil:
	// never.
	Manual func(ctx context.Context, m Mode) bool
	// Record records a change: its audit record and, when event is true, its event through the
	// outbox; required. When it fails, Publish is tried, and a change whose event was published
	// is recorded later without it (so the bus sees each change once).
	Record func(ctx context.Context, p events.DegradationChanged, event bool) error
	// Publish sends a change's event straight to the bus when Record cannot (the database
	// refuses writes); nil: none. A change neither recorded nor published is retried next round;
	// one only published is recorded once the database takes writes again.
	Publish func(ctx context.Context, p events.DegradationChanged) error
	// OnChange is called after each change (the relay is held while bus_down is manual).
	OnChange func(Status)

	Interval      time.Duration // between rounds; default 1 s
	RecoverRounds int           // healthy rounds in a row before an automatic mode is left; default 3
	RetryAfter    time.Duration // of the 503s a mode answers; default 5 s
	Logger        *slog.Logger
	Tracer        trace.Tracer
	Meter         metric.Meter
	Now           func() time.Time
}

// ModeState is one mode's state.
type ModeState struct {
	Mode    Mode
	Active  bool
	Trigger string    // events.DegradeTriggerAuto or DegradeTriggerManual; "" when inactive
	Reason  string    // why it is active; "" when inactive
	Since   time.Time // when it was last entered or left; zero before any change
}

// Status is the set of modes at one round.
type Status struct {
	Modes     []ModeState // in the order of Modes
	CheckedAt time.Time   // zero before the first round
}

// Active reports whether m is active.
func (s Status) Active(m Mode) bool {
	for _, st := range s.Modes {
		if st.Mode == m {
			return st.Active
		}
	}
	return false
}

// Forced reports whether m is active through its flag (trigger manual).
func (s Status) Forced(m Mode) bool {
	for _, st := range s.Modes {
		if st.Mode == m {
			return st.Active && st.Trigger == events.DegradeTriggerManual
		}
	}
	return false
}

// Degraded reports whether any mode is active.
func (s Status) Degraded() bool {
	return slices.ContainsFunc(s.Modes, func(st ModeState) bool { return st.Active })
}

// Monitor runs the rounds and answers Admit; see the package documentation.
type Monitor struct {
	opts   Options
	log    *slog.Logger
	state  atomic.Pointer[Status]
	roundM sync.Mutex // one round at a time (Run and tests' Round)

	// Owned by the round (under roundM).
	healthy  map[Mode]int                // healthy rounds in a row of an active automatic mode
	pending  []events.DegradationChanged // changes not yet recorded in the database
	unsent   map[string]bool             // of pending, those not published on the bus either
	changes  metric.Int64Counter
	refusals metric.Int64Counter
	activeG  metric.Int64ObservableGauge
}

// maxPending bounds the changes kept for recording while the database refuses writes; beyond it
// the oldest are dropped (their events were published on the bus, or are logged).
const maxPending = 256

// New returns a Monitor. Every mode starts inactive.
func New(opts Options) (*Monitor, error) {
	if opts.Record == nil {
		return nil, errors.New("degrade: Record is required")
	}
	if !events.ValidKernelName(opts.Kernel) {
		return nil, fmt.Errorf("degrade: kernel name %q is not 1 to 255 printable ASCII characters", opts.Kernel)
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.RecoverRounds <= 0 {
		opts.RecoverRounds = DefaultRecoverRounds
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Tracer == nil {
		opts.Tracer = tracenoop.NewTracerProvider().Tracer("nops/degrade")
	}
	if opts.Meter == nil {
		opts.Meter = noop.NewMeterProvider().Meter("nops/degrade")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Monitor{opts: opts, log: opts.Logger.With(slog.String("component", "degrade")), healthy: map[Mode]int{}, unsent: map[string]bool{}}
	st := &Status{}
	for _, mode := range Modes {
		st.Modes = append(st.Modes, ModeState{Mode: mode})
	}
	m.state.Store(st)
	var err error
	if m.changes, err = opts.Meter.Int64Counter("nops_degradation_changes_total",
		metric.WithDescription("Degraded modes entered and left, by mode, change and trigger.")); err != nil {
		return nil, fmt.Errorf("degrade metrics: %w", err)
	}
	if m.refusals, err = opts.Meter.Int64Counter("nops_degradation_refusals_total",
		metric.WithDescription("Requests refused by a degraded mode, by mode and class.")); err != nil {
		return nil, fmt.Errorf("degrade metrics: %w", err)
	}
	if m.activeG, err = opts.Meter.Int64ObservableGauge("nops_degraded_mode",
		metric.WithDescription("1 while this replica is in the degraded mode, else 0."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for _, s := range m.Status().Modes {
				v := int64(0)
				if s.Active {
					v = 1
				}
				o.Observe(v, metric.WithAttributes(attribute.String("mode", string(s.Mode))))
			}
			return nil
		})); err != nil {
		return nil, fmt.Errorf("degrade metrics: %w", err)
	}
	return m, nil
}

// Status returns the current state; the caller owns the copy.
func (m *Monitor) Status() Status {
	s := *m.state.Load()
	s.Modes = slices.Clone(s.Modes)
	return s
}

// RetryAfter is the Retry-After of the modes' refusals.
func (m *Monitor) RetryAfter() time.Duration { return m.opts.RetryAfter }

// Admit refuses a request the active modes do not serve: a write in read_only mode, a
// best-effort operation in shed_best_effort mode. The refusal is an *errs.Error unavailable
// (503) with Retry-After. Requests outside the matrix (known is false) are judged as best-effort
// reads.
func (m *Monitor) Admit(ctx context.Context, r *http.Request, row Route) error {
	s := m.state.Load()
	switch {
	case row.Write && s.Active(ReadOnly):
		m.refusals.Add(ctx, 1, metric.WithAttributes(attribute.String("mode", string(ReadOnly)), attribute.String("class", string(row.Class))))
		return &errs.Error{Code: errs.Unavailable, Message: "the kernel is in read-only mode: the database refuses writes; reads are served, retry the change later", RetryAfter: m.opts.RetryAfter}
	case row.Class == BestEffort && s.Active(ShedBestEffort):
		m.refusals.Add(ctx, 1, metric.WithAttributes(attribute.String("mode", string(ShedBestEffort)), attribute.String("class", string(row.Class))))
		return &errs.Error{Code: errs.Unavailable, Message: "the kernel is shedding best-effort requests under load; retry later", RetryAfter: m.opts.RetryAfter}
	}
	return nil
}

// AdmitAgent refuses a call to an agent of criticality class (the agent's registered
// `criticality`: critical, essential, best_effort) that the active modes shed: best_effort agents
// in shed_best_effort mode, so their capabilities are refused before critical and essential ones.
// The refusal is an *errs.Error unavailable (503) with Retry-After, counted like Admit's.
func (m *Monitor) AdmitAgent(ctx context.Context, class string) error {
	if Class(class) != BestEffort || !m.state.Load().Active(ShedBestEffort) {
		return nil
	}
	m.refusals.Add(ctx, 1, metric.WithAttributes(attribute.String("mode", string(ShedBestEffort)), attribute.String("class", class)))
	return &errs.Error{Code: errs.Unavailable, Message: "the kernel is shedding best-effort agents under load: every agent of this capability is best_effort; retry later", RetryAfter: m.opts.RetryAfter}
}

// Run runs a round every Interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		m.Round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Round observes every signal once, applies the changes and records them.
func (m *Monitor) Round(ctx context.Context) {
	m.roundM.Lock()
	defer m.roundM.Unlock()
	prev := m.state.Load()
	next := &Status{Modes: slices.Clone(prev.Modes), CheckedAt: m.opts.Now().UTC()}
	var changed []events.DegradationChanged
	for i, cur := range next.Modes {
		mode := cur.Mode
		manual := m.opts.Manual != nil && m.opts.Manual(ctx, mode)
		var sig Signal
		if probe := m.opts.Signals[mode]; probe != nil {
			sig = probe(ctx)
		}
		want := cur
		switch {
		case manual:
			want.Active, want.Trigger, want.Reason = true, events.DegradeTriggerManual, "flag "+FlagKey(mode)
			m.healthy[mode] = 0
		case sig.Bad:
			want.Active, want.Trigger, want.Reason = true, events.DegradeTriggerAuto, sig.Reason
			m.healthy[mode] = 0
		case cur.Active && cur.Trigger == events.DegradeTriggerAuto:
			// Hysteresis: an automatic mode is left after RecoverRounds healthy rounds in a row.
			m.healthy[mode]++
			if m.healthy[mode] >= m.opts.RecoverRounds {
				want = ModeState{Mode: mode}
				m.healthy[mode] = 0
			}
		default:
			want = ModeState{Mode: mode} // inactive, or a manual mode whose flag went off
		}
		if want.Active == cur.Active {
			if want.Active {
				// Still active: keep Since, follow the latest trigger and reason.
				want.Since = cur.Since
				next.Modes[i] = want
			}
			continue
		}
		want.Since = next.CheckedAt
		p := events.DegradationChanged{Mode: string(mode), Change: events.DegradeEntered, Trigger: want.Trigger,
			Reason: want.Reason, Kernel: m.opts.Kernel, ChangedAt: want.Since}
		if !want.Active {
			p.Change, p.Trigger, p.Reason = events.DegradeLeft, cur.Trigger, "recovered"
			if cur.Trigger == events.DegradeTriggerManual {
				p.Reason = "flag " + FlagKey(mode) + " off"
			}
		}
		p.Reason = clientSafe(p.Reason)
		next.Modes[i] = want
		changed = append(changed, p)
	}
	m.state.Store(next)
	for _, p := range changed {
		m.log.WarnContext(ctx, "degraded mode "+p.Change, "mode", p.Mode, "trigger", p.Trigger, "reason", p.Reason)
		m.changes.Add(ctx, 1, metric.WithAttributes(attribute.String("mode", p.Mode), attribute.String("change", p.Change), attribute.String("trigger", p.Trigger)))
	}
	m.record(ctx, changed)
	if len(changed) > 0 && m.opts.OnChange != nil {
		m.opts.OnChange(m.Status())
	}
}

// record records the pending changes in order, each in its own span; see Options.Record.
func (m *Monitor) record(ctx context.Context, changed []events.DegradationChanged) {
	for _, p := range changed {
		m.unsent[eventKey(p)] = true
	}
	m.pending = append(m.pending, changed...)
	if over := len(m.pending) - maxPending; over > 0 {
		for _, p := range m.pending[:over] {
			m.log.ErrorContext(ctx, "degraded-mode change dropped unrecorded", "mode", p.Mode, "change", p.Change, "at", p.ChangedAt)
			delete(m.unsent, eventKey(p))
		}
		m.pending = slices.Clone(m.pending[over:])
	}
	for len(m.pending) > 0 {
		p := m.pending[0]
		key := eventKey(p)
		ok := m.recordOne(ctx, p, m.unsent[key])
		if !ok {
			return // keep the order: the next ones wait for this one
		}
		delete(m.unsent, key)
		m.pending = m.pending[1:]
	}
}

// recordOne records p; when the database refuses, it publishes p's event on the bus (once). It
// reports whether p was recorded.
func (m *Monitor) recordOne(ctx context.Context, p events.DegradationChanged, publish bool) bool {
	ctx, span := m.opts.Tracer.Start(ctx, "degradation.changed", trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String("nops.degradation.mode", p.Mode), attribute.String("nops.degradation.change", p.Change),
			attribute.String("nops.degradation.trigger", p.Trigger)))
	defer span.End()
	rctx, cancel := context.WithTimeout(ctx, m.opts.Interval*2)
	err := m.opts.Record(rctx, p, publish)
	cancel()
	if err == nil {
		return true
	}
	m.log.WarnContext(ctx, "degraded-mode change not recorded yet; retried next round", "mode", p.Mode, "change", p.Change, "error", err.Error())
	if publish && m.opts.Publish != nil {
		pctx, cancel := context.WithTimeout(ctx, m.opts.Interval*2)
		perr := m.opts.Publish(pctx, p)
		cancel()
		if perr == nil {
			m.unsent[eventKey(p)] = false
		} else {
			m.log.WarnContext(ctx, "degraded-mode change not published either", "mode", p.Mode, "change", p.Change, "error", perr.Error())
		}
	}
	return false
}

func eventKey(p events.DegradationChanged) string {
	return p.Mode + "|" + p.Change + "|" + p.ChangedAt.Format(time.RFC3339Nano)
}

// clientSafe keeps a reason within the event's bounds: printable ASCII, at most 256 bytes.
func clientSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '?'
		}
	}
	if len(b) > 256 {
		b = b[:256]
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}
