package billing_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/billing"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/store/postgres"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// realStore is what the tests need of a storage adapter: the recorder's Store and the outbox's
// read side, to see what was written.
type realStore interface {
	billing.Store
	events.OutboxRelayStore
}

// eachBackend runs fn once per storage adapter, in parallel subtests, each on a new migrated
// database. PostgreSQL runs when NOPS_TEST_POSTGRES_URL is set.
func eachBackend(t *testing.T, fn func(t *testing.T, s realStore)) {
	t.Run("sqlite", func(t *testing.T) { t.Parallel(); fn(t, openSQLite(t)) })
	t.Run("postgres", func(t *testing.T) { t.Parallel(); fn(t, openPostgres(t)) })
}

func openSQLite(t *testing.T) realStore {
	t.Helper()
	s, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "nops.db")}, nil)
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close sqlite: %v", err)
		}
	})
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatalf("migrate sqlite: %v", err)
	}
	return s
}

func openPostgres(t *testing.T) realStore {
	t.Helper()
	url := services.Postgres(t)
	s, err := postgres.Open(t.Context(), postgres.Config{URL: url, MaxConns: 4}, nil)
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close postgres: %v", err)
		}
	})
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatalf("migrate postgres: %v", err)
	}
	return s
}

// Failure modes of txStore.
const (
	healthy     int32 = iota
	down              // InTx fails without reaching the database
	lostCommit        // InTx commits, then reports a failure (a connection lost during COMMIT), once
	failedBatch       // the transaction's last AddToOutbox fails, so it rolls back
)

var errDown = errors.New("injected: database unreachable")

// txStore wraps a real store: it records the ids each committed transaction added and can make
// transactions fail in the ways above.
type txStore struct {
	realStore
	mode atomic.Int32

	mu       sync.Mutex
	txs      [][]string // ids added by each committed transaction
	attempts int        // InTx calls, failed ones included
}

type txIDsKey struct{}

func (s *txStore) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	s.mu.Lock()
	s.attempts++
	s.mu.Unlock()
	mode := s.mode.Load()
	if mode == down {
		return errDown
	}
	var ids []string
	err := s.realStore.InTx(ctx, func(ctx context.Context) error {
		if err := fn(context.WithValue(ctx, txIDsKey{}, &ids)); err != nil {
			return err
		}
		if mode == failedBatch {
			return errs.New(errs.Unavailable, "injected: statement failed")
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.txs = append(s.txs, ids)
	s.mu.Unlock()
	if mode == lostCommit {
		s.mode.Store(healthy)
		return errors.New("injected: connection lost during commit")
	}
	return nil
}

func (s *txStore) AddToOutbox(ctx context.Context, r events.OutboxRecord) error {
	if err := s.realStore.AddToOutbox(ctx, r); err != nil {
		return err
	}
	if ids, ok := ctx.Value(txIDsKey{}).(*[]string); ok {
		*ids = append(*ids, r.ID)
	}
	return nil
}

// sizes returns the number of records of each committed transaction.
func (s *txStore) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, len(s.txs))
	for i, ids := range s.txs {
		out[i] = len(ids)
	}
	return out
}

func (s *txStore) attemptCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// metrics is a meter whose counters the test reads.
type metrics struct{ reader *sdkmetric.ManualReader }

func newMetrics(t *testing.T) (metrics, billing.Options) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return metrics{reader}, billing.Options{Meter: mp.Meter("test")}
}

// counter sums the points of counter name whose attributes include reason (any when "").
func (m metrics) counter(t *testing.T, name, reason string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != name {
				continue
			}
			for _, dp := range mt.Data.(metricdata.Sum[int64]).DataPoints {
				if v, _ := dp.Attributes.Value(attribute.Key("reason")); reason == "" || v.AsString() == reason {
					total += dp.Value
				}
			}
		}
	}
	return total
}

// newRecorder builds a recorder and fails the test on error.
func newRecorder(t *testing.T, s billing.Store, opts billing.Options) *billing.Recorder {
	t.Helper()
	r, err := billing.NewRecorder(s, opts)
	if err != nil {
		t.Fatalf("NewRecorder: %v", err)
	}
	return r
}

// run starts r.Run; stop ends it and returns Run's error. The test's cleanup stops it too.
func run(t *testing.T, r *billing.Recorder) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// base is a fixed instant with nanoseconds, in a zone other than UTC: the recorder writes UTC.
var base = time.Date(2025, 3, 14, 16, 9, 26, 535897932, time.FixedZone("UTC+1", 3600))

const tenant = "ten_billing"

// usage returns the n-th usage of a test, gateway or invocation alternately, each with its own
// request id.
func usage(n int) billing.Usage {
	u := billing.Usage{
		Tenant: tenant, Source: billing.SourceGateway, Route: "POST /v1/agents/{agent_id}/heartbeat",
		RequestID: fmt.Sprintf("req_%06d", n), Status: 200 + n%3, RequestBytes: int64(n * 10),
		ResponseBytes: int64(n * 100), StartedAt: base.Add(time.Duration(n) * time.Millisecond),
		Duration: time.Duration(n)*time.Microsecond + 7*time.Nanosecond,
	}
	if n%2 == 1 {
		u.Source, u.Route, u.Capability, u.AgentID = billing.SourceInvocation, "", "text.summarize", fmt.Sprintf("agt_%04d", n)
	}
	if n%5 == 0 {
		u.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	}
	return u
}

// loadSchemas compiles api/events.
func loadSchemas(t *testing.T) *events.Schemas {
	t.Helper()
	s, err := events.LoadSchemas(os.DirFS("../../api/events"))
	if err != nil {
		t.Fatalf("LoadSchemas: %v", err)
	}
	return s
}

// outbox returns the records in the outbox, lowest seq first.
func outbox(t *testing.T, s events.OutboxRelayStore) []events.OutboxRecord {
	t.Helper()
	recs, err := s.PendingOutbox(context.Background(), 100000)
	if err != nil {
		t.Fatalf("PendingOutbox: %v", err)
	}
	return recs
}

// checkOutbox checks that the outbox holds exactly one valid nops.billing.usage.v1 event per
// usage in want, with the usage's data, and nothing else.
func checkOutbox(t *testing.T, s events.OutboxRelayStore, want []billing.Usage) {
	t.Helper()
	schemas := loadSchemas(t)
	byRequest := map[string]billing.Usage{}
	for _, u := range want {
		byRequest[u.RequestID] = u
	}
	seen := map[string]bool{}
	recs := outbox(t, s)
	if len(recs) != len(want) {
		t.Errorf("outbox holds %d records, want %d", len(recs), len(want))
	}
	for _, rec := range recs {
		if err := schemas.Validate(rec.Payload); err != nil {
			t.Errorf("record %s does not match the schemas: %v", rec.ID, err)
		}
		e, err := events.Parse(rec.Payload)
		if err != nil {
			t.Errorf("Parse record %s: %v", rec.ID, err)
			continue
		}
		p, err := e.Payload()
		if err != nil {
			t.Errorf("Payload of %s: %v", rec.ID, err)
			continue
		}
		got, ok := p.(events.BillingUsage)
		if !ok {
			t.Errorf("record %s holds a %T", rec.ID, p)
			continue
		}
		u, ok := byRequest[got.RequestID]
		switch {
		case !ok:
			t.Errorf("record %s is of request %q, which the test did not record", rec.ID, got.RequestID)
			continue
		case seen[got.RequestID]:
			t.Errorf("request %q written twice", got.RequestID)
		}
		seen[got.RequestID] = true
		if got != u.Payload() {
			t.Errorf("record %s data %+v, want %+v", rec.ID, got, u.Payload())
		}
		end := u.StartedAt.Add(u.Duration).UTC()
		if e.Type != events.TypeBillingUsage || e.Subject != "tenants/"+tenant+"/usage" || e.Tenant != tenant ||
			!e.Time.Equal(end) || e.TraceParent != u.TraceParent || rec.ID != e.ID || rec.Subject != e.Subject {
			t.Errorf("record %s: envelope %+v, want type %s, subject tenants/%s/usage, time %v, traceparent %q",
				rec.ID, e, events.TypeBillingUsage, tenant, end, u.TraceParent)
		}
	}
}
