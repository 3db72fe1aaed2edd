package bus_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func validMessage() bus.Message {
	return bus.Message{
		ID: "evt_01", Tenant: "ten_a", Type: "nops.agent.registered.v1",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Payload:     []byte(`{"specversion":"1.0"}`),
	}
}

// fieldOf returns the name of the first offending field of an errs.Invalid, or "" when err is
// not one.
func fieldOf(err error) string {
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid || len(e.Fields) == 0 {
		return ""
	}
	return e.Fields[0].Name
}

func TestMessageValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(m *bus.Message)
		field  string // "" valid
	}{
		{"valid", func(*bus.Message) {}, ""},
		{"no traceparent", func(m *bus.Message) { m.TraceParent = "" }, ""},
		{"id of 128", func(m *bus.Message) { m.ID = strings.Repeat("x", 128) }, ""},
		{"id of 129", func(m *bus.Message) { m.ID = strings.Repeat("x", 129) }, "id"},
		{"empty id", func(m *bus.Message) { m.ID = "" }, "id"},
		{"empty tenant", func(m *bus.Message) { m.Tenant = "" }, "tenant"},
		{"tenant of 64", func(m *bus.Message) { m.Tenant = strings.Repeat("t", 64) }, ""},
		{"tenant of 65", func(m *bus.Message) { m.Tenant = strings.Repeat("t", 65) }, "tenant"},
		{"tenant with a dot", func(m *bus.Message) { m.Tenant = "a.b" }, "tenant"},
		{"tenant with a colon", func(m *bus.Message) { m.Tenant = "a:b" }, "tenant"},
		{"tenant wildcard", func(m *bus.Message) { m.Tenant = "*" }, "tenant"},
		{"tenant with a space", func(m *bus.Message) { m.Tenant = "a b" }, "tenant"},
		{"type without version", func(m *bus.Message) { m.Type = "nops.agent.registered" }, "type"},
		{"type too short", func(m *bus.Message) { m.Type = "nops.agent.v1" }, "type"},
		{"type too long", func(m *bus.Message) { m.Type = "nops.agent.x.registered.v1" }, "type"},
		{"type version 0", func(m *bus.Message) { m.Type = "nops.agent.registered.v0" }, "type"},
		{"type upper case", func(m *bus.Message) { m.Type = "nops.Agent.registered.v1" }, "type"},
		{"type wildcard", func(m *bus.Message) { m.Type = "nops.agent.>" }, "type"},
		{"type version 12", func(m *bus.Message) { m.Type = "nops.agent.registered.v12" }, ""},
		{"empty payload", func(m *bus.Message) { m.Payload = nil }, "payload"},
		{"payload at the limit", func(m *bus.Message) { m.Payload = make([]byte, bus.MaxPayload) }, ""},
		{"payload over the limit", func(m *bus.Message) { m.Payload = make([]byte, bus.MaxPayload+1) }, "payload"},
		{"traceparent with CR LF", func(m *bus.Message) { m.TraceParent = "00-x\r\nX: y" }, "traceparent"},
		{"traceparent with LF", func(m *bus.Message) { m.TraceParent = "00-x\n" }, "traceparent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := validMessage()
			c.change(&m)
			err := m.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if got := fieldOf(err); got != c.field {
				t.Fatalf("Validate() = %v, want an errs.Invalid naming %q", err, c.field)
			}
		})
	}
}

func TestConsumerConfigDefaultsAndValidate(t *testing.T) {
	got := bus.ConsumerConfig{Name: "c"}.WithDefaults()
	want := bus.ConsumerConfig{Name: "c", MaxDeliveries: bus.DefaultMaxDeliveries, Backoff: bus.DefaultBackoff,
		AckWait: bus.DefaultAckWait, Concurrency: 1, Prefetch: bus.DefaultPrefetch, Batch: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WithDefaults (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate(defaults) = %v", err)
	}
	set := bus.ConsumerConfig{Name: "c", MaxDeliveries: 2, Backoff: bus.Backoff{Initial: time.Second}, AckWait: time.Minute, Concurrency: 8, Prefetch: bus.NoPrefetch, Batch: 64}
	if diff := cmp.Diff(set, set.WithDefaults()); diff != "" {
		t.Errorf("WithDefaults changed set fields (-set +got):\n%s", diff)
	}

	cases := []struct {
		name   string
		change func(c *bus.ConsumerConfig)
		field  string
	}{
		{"empty name", func(c *bus.ConsumerConfig) { c.Name = "" }, "name"},
		{"name with a dot", func(c *bus.ConsumerConfig) { c.Name = "a.b" }, "name"},
		{"name wildcard", func(c *bus.ConsumerConfig) { c.Name = ">" }, "name"},
		{"batch negative", func(c *bus.ConsumerConfig) { c.Batch = -1 }, "batch"},
		{"batch over the limit", func(c *bus.ConsumerConfig) { c.Batch = bus.MaxBatch + 1 }, "batch"},
		{"max deliveries 0", func(c *bus.ConsumerConfig) { c.MaxDeliveries = 0 }, "max_deliveries"},
		{"max deliveries negative", func(c *bus.ConsumerConfig) { c.MaxDeliveries = -3 }, "max_deliveries"},
		{"ack wait 99ms", func(c *bus.ConsumerConfig) { c.AckWait = 99 * time.Millisecond }, "ack_wait"},
		{"ack wait 100ms", func(c *bus.ConsumerConfig) { c.AckWait = 100 * time.Millisecond }, ""},
		{"concurrency 0", func(c *bus.ConsumerConfig) { c.Concurrency = 0 }, "concurrency"},
		{"bad filter tenant", func(c *bus.ConsumerConfig) { c.Filter.Tenants = []string{"ok", "not ok"} }, "tenants"},
		{"bad filter type", func(c *bus.ConsumerConfig) { c.Filter.Types = []string{"nops.a.b.v1", "nops.*"} }, "types"},
		{"good filter", func(c *bus.ConsumerConfig) {
			c.Filter = bus.Filter{Tenants: []string{"ten_a"}, Types: []string{"nops.a.b.v1"}}
		}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := bus.ConsumerConfig{Name: "c"}.WithDefaults()
			c.change(&cfg)
			err := cfg.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if got := fieldOf(err); got != c.field {
				t.Fatalf("Validate() = %v, want an errs.Invalid naming %q", err, c.field)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		b       bus.Backoff
		attempt int
		want    time.Duration
	}{
		{bus.Backoff{}, 1, bus.DefaultBackoff.Initial},
		{bus.Backoff{}, 2, 2 * bus.DefaultBackoff.Initial},
		{bus.Backoff{}, 1000, bus.DefaultBackoff.Max},
		{bus.Backoff{Initial: 100 * ms, Max: time.Second}, 0, 100 * ms},
		{bus.Backoff{Initial: 100 * ms, Max: time.Second}, 1, 100 * ms},
		{bus.Backoff{Initial: 100 * ms, Max: time.Second}, 2, 200 * ms},
		{bus.Backoff{Initial: 100 * ms, Max: time.Second}, 3, 400 * ms},
		{bus.Backoff{Initial: 100 * ms, Max: time.Second}, 4, 800 * ms},
		{bus.Backoff{Initial: 100 * ms, Max: time.Second}, 5, time.Second},
		{bus.Backoff{Initial: 100 * ms, Max: time.Second}, 1 << 30, time.Second},
		{bus.Backoff{Initial: 20 * ms, Max: 200 * ms}, 4, 160 * ms},
		{bus.Backoff{Initial: 20 * ms, Max: 200 * ms}, 5, 200 * ms},
		{bus.Backoff{Initial: time.Second}, 3, time.Second},                 // Max below Initial: Initial
		{bus.Backoff{Initial: time.Second, Max: ms}, 5, time.Second},        // likewise
		{bus.Backoff{Initial: -time.Second}, 1, bus.DefaultBackoff.Initial}, // not positive: the default
	}
	for _, c := range cases {
		if got := c.b.Delay(c.attempt); got != c.want {
			t.Errorf("%+v.Delay(%d) = %s, want %s", c.b, c.attempt, got, c.want)
		}
	}
	// Never above Max, never decreasing.
	b := bus.Backoff{Initial: 3 * ms, Max: 5 * time.Second}
	prev := time.Duration(0)
	for n := 1; n < 100; n++ {
		d := b.Delay(n)
		if d < prev || d > b.Max {
			t.Fatalf("Delay(%d) = %s after %s (max %s)", n, d, prev, b.Max)
		}
		prev = d
	}
}

func TestRetryDelayAndTerminal(t *testing.T) {
	b := bus.Backoff{Initial: time.Second, Max: time.Minute}
	plain := errors.New("boom")
	cases := []struct {
		name     string
		err      error
		attempt  int
		want     time.Duration
		terminal bool
	}{
		{"plain error", plain, 3, 4 * time.Second, false},
		{"retry after", bus.RetryAfter(plain, 7*time.Second), 3, 7 * time.Second, false},
		{"wrapped retry after", fmt.Errorf("ctx: %w", bus.RetryAfter(plain, 9*time.Second)), 1, 9 * time.Second, false},
		{"retry after zero", bus.RetryAfter(plain, 0), 2, 2 * time.Second, false},
		{"retry after negative", bus.RetryAfter(plain, -time.Second), 1, time.Second, false},
		{"terminal", bus.Terminal(plain), 1, time.Second, true},
		{"wrapped terminal", fmt.Errorf("ctx: %w", bus.Terminal(plain)), 1, time.Second, true},
	}
	for _, c := range cases {
		if got := bus.RetryDelay(c.err, c.attempt, b); got != c.want {
			t.Errorf("%s: RetryDelay = %s, want %s", c.name, got, c.want)
		}
		if got := bus.IsTerminal(c.err); got != c.terminal {
			t.Errorf("%s: IsTerminal = %v, want %v", c.name, got, c.terminal)
		}
		if !errors.Is(c.err, plain) {
			t.Errorf("%s: the cause is not kept", c.name)
		}
		if c.err.Error() != plain.Error() && !strings.HasSuffix(c.err.Error(), plain.Error()) {
			t.Errorf("%s: Error() = %q hides the cause", c.name, c.err.Error())
		}
	}
	if err := bus.Terminal(nil); err == nil || !bus.IsTerminal(err) {
		t.Errorf("Terminal(nil) = %v, want a terminal error", err)
	}
	if err := bus.RetryAfter(nil, time.Second); err == nil || bus.RetryDelay(err, 1, b) != time.Second {
		t.Errorf("RetryAfter(nil, 1s) = %v, want an error asking for 1s", err)
	}
	if bus.IsTerminal(nil) || bus.IsTerminal(plain) {
		t.Errorf("IsTerminal of nil or a plain error is true")
	}
}

func TestBackpressure(t *testing.T) {
	err := bus.Backpressure(2*time.Second, 3*time.Second)
	if !errors.Is(err, bus.ErrBackpressure) {
		t.Errorf("Backpressure does not wrap ErrBackpressure: %v", err)
	}
	e := errs.As(err)
	if e == nil || e.Code != errs.Unavailable || e.RetryAfter != 3*time.Second {
		t.Fatalf("Backpressure = %#v, want errs.Unavailable with RetryAfter 3s", e)
	}
	if strings.Contains(e.Message, "2s") {
		t.Errorf("the client message %q carries internal detail", e.Message)
	}
}

func TestFilter(t *testing.T) {
	const ta, tb, x, y = "ten_a", "ten_b", "nops.a.x.v1", "nops.a.y.v1"
	cases := []struct {
		f                  bus.Filter
		tenant, typ        string
		match, validFilter bool
	}{
		{bus.Filter{}, ta, x, true, true},
		{bus.Filter{Tenants: []string{ta}}, ta, x, true, true},
		{bus.Filter{Tenants: []string{ta}}, tb, x, false, true},
		{bus.Filter{Tenants: []string{tb, ta}}, ta, y, true, true},
		{bus.Filter{Types: []string{x}}, tb, x, true, true},
		{bus.Filter{Types: []string{x}}, tb, y, false, true},
		{bus.Filter{Tenants: []string{ta}, Types: []string{x}}, ta, x, true, true},
		{bus.Filter{Tenants: []string{ta}, Types: []string{x}}, ta, y, false, true},
		{bus.Filter{Tenants: []string{ta}, Types: []string{x}}, tb, x, false, true},
		{bus.Filter{Tenants: []string{"a.b"}}, ta, x, false, false},
		{bus.Filter{Types: []string{"*"}}, ta, x, false, false},
	}
	for _, c := range cases {
		if got := c.f.Match(c.tenant, c.typ); got != c.match {
			t.Errorf("%+v.Match(%s, %s) = %v, want %v", c.f, c.tenant, c.typ, got, c.match)
		}
		if err := c.f.Validate(); (err == nil) != c.validFilter || (err != nil && !errs.Is(err, errs.Invalid)) {
			t.Errorf("%+v.Validate() = %v, want valid %v", c.f, err, c.validFilter)
		}
	}
}

func TestDLQFilterMatch(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	dl := bus.DeadLetter{ID: "dlq_1", Message: bus.Message{ID: "e1", Tenant: "ten_a", Type: "nops.a.x.v1"}, Consumer: "c1", FailedAt: at}
	cases := []struct {
		name string
		f    bus.DLQFilter
		want bool
	}{
		{"zero", bus.DLQFilter{}, true},
		{"tenant", bus.DLQFilter{Tenant: "ten_a"}, true},
		{"other tenant", bus.DLQFilter{Tenant: "ten_b"}, false},
		{"consumer", bus.DLQFilter{Consumer: "c1"}, true},
		{"other consumer", bus.DLQFilter{Consumer: "c2"}, false},
		{"type", bus.DLQFilter{Type: "nops.a.x.v1"}, true},
		{"other type", bus.DLQFilter{Type: "nops.a.y.v1"}, false},
		{"ids", bus.DLQFilter{IDs: []string{"dlq_0", "dlq_1"}}, true},
		{"other ids", bus.DLQFilter{IDs: []string{"dlq_0"}}, false},
		{"message id is not the dead letter id", bus.DLQFilter{IDs: []string{"e1"}}, false},
		{"since equal (inclusive)", bus.DLQFilter{Since: at}, true},
		{"since after", bus.DLQFilter{Since: at.Add(time.Nanosecond)}, false},
		{"until equal (exclusive)", bus.DLQFilter{Until: at}, false},
		{"until after", bus.DLQFilter{Until: at.Add(time.Nanosecond)}, true},
		{"window", bus.DLQFilter{Since: at.Add(-time.Hour), Until: at.Add(time.Hour)}, true},
		{"all fields", bus.DLQFilter{Tenant: "ten_a", Consumer: "c1", Type: "nops.a.x.v1", IDs: []string{"dlq_1"}, Since: at, Until: at.Add(1)}, true},
		{"all but one field", bus.DLQFilter{Tenant: "ten_a", Consumer: "c2", Type: "nops.a.x.v1", IDs: []string{"dlq_1"}}, false},
	}
	for _, c := range cases {
		if got := c.f.Match(dl); got != c.want {
			t.Errorf("%s: Match = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestDeadLetterID(t *testing.T) {
	id := bus.DeadLetterID("c1", "evt_1")
	if id != bus.DeadLetterID("c1", "evt_1") {
		t.Fatalf("DeadLetterID is not deterministic")
	}
	if len(id) != len("dlq_")+32 || !strings.HasPrefix(id, "dlq_") || strings.Trim(id[4:], "0123456789abcdef") != "" {
		t.Errorf("DeadLetterID = %q, want dlq_ and 32 hex characters", id)
	}
	if !bus.ValidToken(id) {
		t.Errorf("DeadLetterID %q is not a valid token", id)
	}
	others := []string{
		bus.DeadLetterID("c2", "evt_1"),
		bus.DeadLetterID("c1", "evt_2"),
		bus.DeadLetterID("c1e", "vt_1"), // the separator keeps the parts apart
		bus.DeadLetterID("", "c1evt_1"),
	}
	for _, o := range others {
		if o == id {
			t.Errorf("different consumer or message ids give the same DeadLetterID %s", id)
		}
	}
}

func TestSubjects(t *testing.T) {
	s := bus.Subjects{NS: "nops"}
	if got, want := s.Event("ten_a", "nops.agent.registered.v1"), "nops.events.ten_a.nops.agent.registered.v1"; got != want {
		t.Errorf("Event = %q, want %q", got, want)
	}
	if got, want := s.Retry("c1", "ten_a", "nops.agent.registered.v1"), "nops.retry.c1.ten_a.nops.agent.registered.v1"; got != want {
		t.Errorf("Retry = %q, want %q", got, want)
	}
	if got, want := s.DeadLetter("ten_a", "c1"), "nops.dlq.ten_a.c1"; got != want {
		t.Errorf("DeadLetter = %q, want %q", got, want)
	}
}

func TestValidTokenAndType(t *testing.T) {
	for _, s := range []string{"a", "A-z_0", strings.Repeat("x", 64), "nops"} {
		if !bus.ValidToken(s) {
			t.Errorf("ValidToken(%q) = false", s)
		}
	}
	for _, s := range []string{"", strings.Repeat("x", 65), "a.b", "a*", ">", "a b", "a:b", "é", "a\n"} {
		if bus.ValidToken(s) {
			t.Errorf("ValidToken(%q) = true", s)
		}
	}
	for _, s := range []string{"nops.agent.registered.v1", "a.b_2.c.v10"} {
		if !bus.ValidType(s) {
			t.Errorf("ValidType(%q) = false", s)
		}
	}
	for _, s := range []string{"", "nops.agent.registered", "nops.agent.registered.v0", "nops.agent.registered.V1",
		"1ops.agent.registered.v1", "nops..registered.v1", "nops.agent.registered.v1.", "nops.agent.registered.v1\n"} {
		if bus.ValidType(s) {
			t.Errorf("ValidType(%q) = true", s)
		}
	}
}

// FuzzMessageValidate: Validate never panics, and what it accepts is safe to put in subjects and
// keys: no wildcard, separator, space or line break beyond the type's own dots.
func FuzzMessageValidate(f *testing.F) {
	m := validMessage()
	f.Add(m.ID, m.Tenant, m.Type, m.TraceParent, m.Payload)
	f.Add("", "", "", "", []byte{})
	f.Add("x", "a.b", "nops.a.>", "00-a\r\n", []byte("{}"))
	f.Add(strings.Repeat("i", 129), "t*", "nops.agent.registered.v0", "", []byte("x"))
	f.Fuzz(func(t *testing.T, id, tenant, typ, traceParent string, payload []byte) {
		m := bus.Message{ID: id, Tenant: tenant, Type: typ, TraceParent: traceParent, Payload: payload}
		err := m.Validate()
		if err != nil {
			if !errs.Is(err, errs.Invalid) || fieldOf(err) == "" {
				t.Fatalf("Validate() = %v, want an errs.Invalid naming a field", err)
			}
			return
		}
		if strings.ContainsAny(tenant, ".*> :\r\n\t\x00") || strings.ContainsAny(typ, "*> :\r\n\t\x00") {
			t.Fatalf("accepted tenant %q or type %q with a subject or key metacharacter", tenant, typ)
		}
		subject := bus.Subjects{NS: "ns"}.Event(tenant, typ)
		if n := strings.Count(subject, "."); n != 6 {
			t.Fatalf("subject %q of an accepted message has %d tokens, want 7", subject, n+1)
		}
		if strings.ContainsAny(traceParent, "\r\n") {
			t.Fatalf("accepted a multi-line traceparent %q", traceParent)
		}
		if len(id) == 0 || len(id) > 128 || len(payload) == 0 || len(payload) > bus.MaxPayload {
			t.Fatalf("accepted id of %d bytes or payload of %d bytes", len(id), len(payload))
		}
	})
}
