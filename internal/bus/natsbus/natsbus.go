// Package natsbus is the NATS JetStream adapter of the kernel's event bus (bus.Bus). By default
// it starts a NATS server with JetStream inside the process (file store under the data
// directory, no TCP port unless asked for) and connects to it in-process; with a URL it connects
// to an external NATS (a single server or a cluster with replicated streams) instead,
// reconnecting for ever with jittered waits.
//
// Only internal/kernel (and tests) import natsbus; domain packages use bus.Bus.
//
// # Streams and subjects
//
// Open creates (or updates) two streams per namespace NS (the namespace upper-cased):
//
//	<NS>_EVENTS  <ns>.events.> and <ns>.retry.>   file storage, MaxAge Retention, dedup window DedupWindow
//	<NS>_DLQ     <ns>.dlq.>                       file storage, kept until removed
//
// Every message carries the headers Nats-Msg-Id (the broker's dedup key: the event id, or the
// redelivery's dedup key), Nops-Id (the event id, when it differs from Nats-Msg-Id), Nops-Tenant,
// Nops-Type, traceparent (when set), Content-Type and Nats-Expected-Stream. The subject is
// authoritative for tenant and type.
//
// A consumer is a durable pull consumer named after bus.ConsumerConfig.Name with one filter
// subject per (tenant, type) pair of its filter plus its retry subject; it never gives up on a
// message by itself (MaxDeliver -1): bus.Dispatch counts attempts and dead-letters. Several
// filter subjects need NATS 2.10; against an older server each subject gets a consumer of its
// own (see consumer.go).
//
// # Durability
//
// The embedded server fsyncs every write before acknowledging it by default (DurabilitySync:
// an acknowledged event survives a power loss). DurabilityAsync flushes every SyncInterval
// instead: much faster, and an acknowledged event survives a crash of the process but not of
// the machine. An external NATS decides for itself (its sync_interval setting; replicated
// streams acknowledge once a quorum of replicas stored the event).
//
// # Atomic batches
//
// With DurabilitySync on the embedded server (elsewhere when Config.AtomicBatchMin asks for it)
// and NATS 2.12 or later, the event stream allows atomic batch publish, and a Publish of at
// least AtomicBatchMin messages sends them as atomic batches of up to 1000 (headers
// Nats-Batch-Id, Nats-Batch-Sequence, Nats-Batch-Commit, kept on the stored messages): the
// server stores a batch whole or not at all, with one fsync for the batch instead of one per
// message, so the power-loss-safe rate is no longer bounded by the disk's fsync rate. A batch
// the server rejects (a message id it has already seen within the dedup window, as when the
// outbox relay publishes again after a crash; too many batches in flight) is published again
// one message at a time, which stores the new messages and acknowledges the others as
// duplicates. See atomic.go.
//
// # Backpressure
//
// At most MaxPending publishes are in flight to the broker, shared by all callers. A Publish that
// finds no room for PublishTimeout (or until its context's deadline) fails with an error wrapping
// bus.ErrBackpressure (errs.Unavailable with a Retry-After hint).
//
// Secrets: a URL may carry a user and password or a token. They never appear in errors or logs:
// messages name the servers by host:port only.
//
// # Concurrency
//
// A Bus is safe for concurrent use. Close stops the subscriptions (waiting for their running
// handlers), waits for the publishes in flight, drains the connection and shuts the embedded
// server down; it may be called more than once.
package natsbus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

const (
	defaultConnectTimeout = 10 * time.Second
	defaultName           = "nops"
	// reconnectWait and reconnectJitter pace reconnection to an external NATS: short enough that
	// the bus is back within a second of NATS returning, jittered so replicas do not reconnect in
	// lockstep.
	reconnectWait   = 250 * time.Millisecond
	reconnectJitter = 250 * time.Millisecond
	// dialTimeout bounds one TCP+handshake attempt; ConnectTimeout bounds all attempts at Open.
	dialTimeout = 2 * time.Second
	// pingInterval and maxPingsOut detect a connection that silently stopped answering within
	// about 20 s instead of the library's default 4 min.
	pingInterval = 10 * time.Second
	maxPingsOut  = 2
	drainTimeout = 5 * time.Second
)

// Durability is what an acknowledged event survives on the embedded server.
type Durability string

// The durability settings.
const (
	// DurabilitySync fsyncs every write before it is acknowledged: an acknowledged event survives
	// a power loss (server option SyncAlways). The default.
	DurabilitySync Durability = "sync"
	// DurabilityAsync acknowledges writes once the server holds them and flushes them to disk
	// every SyncInterval (server option SyncInterval): an acknowledged event survives a crash of
	// the process, while a power loss or kernel crash can lose the last SyncInterval of them.
	DurabilityAsync Durability = "async"
)

// Defaults of Config. DefaultAtomicBatchMin applies to the embedded server with DurabilitySync
// only (see Config.AtomicBatchMin).
const (
	DefaultSyncInterval   = time.Second
	DefaultReplicas       = 1
	DefaultRetention      = 7 * 24 * time.Hour
	DefaultDedupWindow    = 2 * time.Minute
	DefaultPublishTimeout = 5 * time.Second
	DefaultMaxPending     = 4096
	DefaultAtomicBatchMin = 16
)

// Config selects and tunes the bus. The zero value is not usable: an embedded bus needs StoreDir.
type Config struct {
	// URL of an external NATS ("nats://host:4222", several separated by commas). Empty starts
	// the embedded server.
	URL string
	// StoreDir is the embedded server's JetStream file store. Required when URL is empty.
	StoreDir string
	// Listen is the host:port on which the embedded server also accepts TCP clients ("…:0" picks
	// a free port). Empty: no TCP port at all, in-process clients only.
	Listen string
	// Name is the client connection name shown by NATS monitoring. Default "nops".
	Name string
	// ConnectTimeout bounds Open: the embedded server's start or the retries against an
	// external NATS, and the creation of the streams. Default 10 s.
	ConnectTimeout time.Duration

	// Namespace prefixes every subject and names the streams ("<NS>_EVENTS", "<NS>_DLQ"), so
	// several kernels or tests can share one NATS account. A bus.ValidToken in lower case.
	// Default bus.DefaultNamespace.
	Namespace string
	// Durability of the embedded server: DurabilitySync (default) or DurabilityAsync. An
	// external NATS is configured on its own side; there the field is ignored.
	Durability Durability
	// SyncInterval is how often the embedded server flushes to disk with DurabilityAsync: the
	// window of acknowledged events a power loss can lose. Default 1 s.
	SyncInterval time.Duration
	// Replicas of each stream on an external NATS cluster (1 to 5; 3 survives the loss of one
	// server). Default 1; the embedded server only has 1.
	Replicas int
	// Retention is how long the event stream keeps events (MaxAge): the replay window. Dead
	// letters are kept until removed. Default 7 days.
	Retention time.Duration
	// DedupWindow is how long the broker remembers message ids to drop repeated publishes
	// (the streams' Duplicates window). At most Retention. Default 2 minutes.
	DedupWindow time.Duration
	// PublishTimeout bounds how long a publish waits for room in a full publish window before
	// failing with bus.ErrBackpressure (or until its context's deadline, when that is sooner).
	// A sent message waits twice as long for the broker's acknowledgement (or until the
	// context's deadline) before it fails as unavailable. Default 5 s.
	PublishTimeout time.Duration
	// MaxPending is how many publishes may be in flight to the broker at once, shared by every
	// caller of this Bus. Default 4096.
	MaxPending int
	// AtomicBatchMin is the smallest Publish (in messages) that is sent as JetStream atomic
	// batches when the server supports them (NATS 2.12 or later): one fsync per batch of up to
	// 1000 messages (at most MaxPending) instead of one per message. Smaller publishes, and all
	// of them against an older server, are sent one message at a time. A negative value never
	// uses atomic batches and leaves atomic publish disabled on the event stream.
	//
	// 0 means DefaultAtomicBatchMin where every message otherwise costs an fsync of its own: the
	// embedded server with DurabilitySync (measured: about 4× the events/s for Publish calls of
	// 100). Everywhere else 0 means never: each batch is staged in a store of its own with
	// several fsyncs, which made Publish about 4× slower under DurabilityAsync. On an external
	// NATS, whose sync setting the client cannot see, set it explicitly when the server runs
	// with sync_always, or for replicated streams.
	AtomicBatchMin int

	// CredsFile is a NATS user credentials file (JWT and NKey seed) for an external NATS.
	CredsFile string
	// TLSCAFile is a PEM file of the CA that signed the external NATS servers' certificates.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are the PEM client certificate and key for an external NATS
	// that requires mutual TLS; set both or neither.
	TLSCertFile string
	TLSKeyFile  string

	// Instruments record the bus's traces and metrics; nil records nothing.
	Instruments *bus.Instruments
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = defaultConnectTimeout
	}
	if c.Name == "" {
		c.Name = defaultName
	}
	if c.Namespace == "" {
		c.Namespace = bus.DefaultNamespace
	}
	if c.Durability == "" {
		c.Durability = DurabilitySync
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = DefaultDedupWindow
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.AtomicBatchMin == 0 {
		c.AtomicBatchMin = -1
		if c.URL == "" && c.Durability == DurabilitySync {
			c.AtomicBatchMin = DefaultAtomicBatchMin
		}
	}
	return c
}

// validate checks c after withDefaults. File options are checked for existence here because
// the client reads them only while dialling, where a missing file would look like an outage
// and be retried until ConnectTimeout.
func (c Config) validate() error {
	switch {
	case !bus.ValidToken(c.Namespace) || c.Namespace != strings.ToLower(c.Namespace):
		// Lower case only: stream names are the namespace upper-cased, so "a" and "A" would
		// share streams.
		return errs.Field("namespace", "must be 1 to 64 characters from a-z, 0-9, '_' and '-'")
	case c.Durability != DurabilitySync && c.Durability != DurabilityAsync:
		return errs.Field("durability", fmt.Sprintf("must be %q or %q", DurabilitySync, DurabilityAsync))
	case c.Replicas < 1 || c.Replicas > 5:
		return errs.Field("replicas", "must be between 1 and 5")
	case c.Replicas > 1 && c.URL == "":
		return errs.Field("replicas", "must be 1 with the embedded server")
	case c.Retention < time.Second:
		return errs.Field("retention", "must be at least 1s")
	case c.DedupWindow < 0 || c.DedupWindow > c.Retention:
		return errs.Field("dedup_window", "must be between 0 and the retention")
	case c.MaxPending < 1:
		return errs.Field("max_pending", "must be at least 1")
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return errs.Field("tls_cert_file", "a client certificate needs its key and the other way round")
	}
	for name, path := range map[string]string{"creds_file": c.CredsFile, "tls_ca_file": c.TLSCAFile, "tls_cert_file": c.TLSCertFile, "tls_key_file": c.TLSKeyFile} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return errs.Wrap(errs.Invalid, fmt.Errorf("%s: %w", name, err), "file %s of option %s is not readable", path, name)
		}
	}
	return nil
}

// Bus is a connection to NATS JetStream, and the embedded server when there is one.
type Bus struct {
	cfg    Config // with defaults
	nc     *nats.Conn
	js     jetstream.JetStream // API requests, and what JetStream() hands out
	pubJS  jetstream.JetStream // this bus's own async publishes, bounded by slots
	srv    *server.Server      // nil for an external NATS
	logger *slog.Logger
	closed chan struct{} // closed by the connection's ClosedHandler
	ins    *bus.Instruments

	// multiFilter: the server takes consumers with several filter subjects (NATS ≥ 2.10);
	// see consumer.go for what happens on older servers.
	multiFilter bool

	subj       bus.Subjects
	eventsName string
	dlqName    string
	events     jetstream.Stream
	dlq        jetstream.Stream

	// slots is the publish window: a publish holds one from before it is sent until its
	// acknowledgement (or failure) is known.
	slots chan struct{}
	// batchGate lets one atomic batch at a time gather the slots it needs (see acquireN).
	batchGate chan struct{}
	// allowAtomic: Open asks for atomic batch publish on the event stream (server ≥ 2.12 and
	// AtomicBatchMin > 0); atomicOn: the stream has it and Publish uses it. atomicOn is
	// switched off for good if the server ever acknowledges a batch as a single message.
	allowAtomic bool
	atomicOn    atomic.Bool

	// mu guards closing, sealed and subs. Close sets closing first (no new Publish, Redeliver
	// or Subscribe), stops the subscriptions, whose handlers may still write dead letters, and
	// then sets sealed (nothing is sent any more). inflight counts the sending calls and the
	// goroutines still waiting for acknowledgements; Add happens under mu.RLock while !sealed,
	// so Close's Wait, after it set sealed under mu.Lock, never races a first Add.
	mu       sync.RWMutex
	closing  bool
	sealed   bool
	subs     map[*subscription]struct{}
	inflight sync.WaitGroup

	// reconnected is closed (and replaced) whenever the connection is restored: pull requests
	// made before were lost with the old connection and are made again at once.
	reconnMu    sync.Mutex
	reconnected chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// reconnectSignal returns a channel closed at the next reconnection.
func (b *Bus) reconnectSignal() <-chan struct{} {
	b.reconnMu.Lock()
	defer b.reconnMu.Unlock()
	return b.reconnected
}

func (b *Bus) signalReconnect() {
	b.reconnMu.Lock()
	defer b.reconnMu.Unlock()
	close(b.reconnected)
	b.reconnected = make(chan struct{})
}

var _ bus.Bus = (*Bus)(nil)

// Open starts (embedded) or connects to (external) NATS, checks that JetStream is enabled and
// creates or updates the namespace's streams. A nil logger discards the bus's logs. An invalid
// cfg is an errs.Invalid.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Bus, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open nats bus: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if cfg.URL == "" {
		return openEmbedded(ctx, cfg, logger.With("component", "natsbus", "mode", "embedded"))
	}
	return openExternal(ctx, cfg, logger.With("component", "natsbus", "mode", "external"))
}

func openEmbedded(ctx context.Context, cfg Config, logger *slog.Logger) (*Bus, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("start embedded nats: no store directory configured")
	}
	opts := &server.Options{
		ServerName:             "nops-embedded",
		JetStream:              true,
		StoreDir:               cfg.StoreDir,
		DontListen:             cfg.Listen == "",
		NoSigs:                 true,
		NoLog:                  true,
		DisableJetStreamBanner: true,
	}
	if cfg.Durability == DurabilitySync {
		opts.SyncAlways = true
	} else {
		opts.SyncInterval = cfg.SyncInterval
	}
	if cfg.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("start embedded nats: listen address %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("start embedded nats: listen address %q: invalid port", cfg.Listen)
		}
		if p == 0 {
			// For nats-server, port 0 means its default 4222; RANDOM_PORT asks the OS.
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	sl := &serverLogger{log: logger, fatal: make(chan error, 1)}
	srv.SetLoggerV2(sl, false, false, false)
	srv.Start()
	if err := waitReady(ctx, srv, sl.fatal); err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start embedded nats (store %s): %w", cfg.StoreDir, err)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start embedded nats (store %s): jetstream is not enabled", cfg.StoreDir)
	}
	b := newBus(cfg, logger)
	b.srv = srv
	closed := make(chan struct{})
	nc, err := nats.Connect("", append(b.connOptions(cfg.Name, closed), nats.InProcessServer(srv))...)
	if err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	if err := b.attach(ctx, nc, closed); err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, err
	}
	if addr := srv.Addr(); addr != nil {
		logger.Info("embedded nats accepts tcp clients", "addr", addr.String())
	}
	return b, nil
}

// waitReady waits for the server to accept clients. The server reports start-up failures (port
// taken, JetStream store unusable) only through its logger's Fatalf, which is why that channel is
// watched: without it a failed start would only show as a timeout.
func waitReady(ctx context.Context, srv *server.Server, fatal <-chan error) error {
	for {
		if srv.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		select {
		case err := <-fatal:
			return err
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", context.Cause(ctx))
		default:
		}
	}
}

func openExternal(ctx context.Context, cfg Config, logger *slog.Logger) (*Bus, error) {
	servers, err := parseURLs(cfg.URL)
	if err != nil {
		return nil, err
	}
	b := newBus(cfg, logger)
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCAFile))
	}
	if cfg.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCertFile, cfg.TLSKeyFile))
	}
	backoff := reconnectWait
	for attempt := 1; ; attempt++ {
		// ctx always has a deadline here (Open sets ConnectTimeout); a zero nats.Timeout would
		// mean no dial timeout at all, so the attempt only starts with time left.
		deadline, _ := ctx.Deadline()
		timeout := min(dialTimeout, time.Until(deadline))
		if timeout <= 0 {
			timeout = time.Millisecond
		}
		// A failed Connect never runs the ClosedHandler, but each attempt still gets its own
		// channel so that no attempt can close the one the Bus keeps.
		closed := make(chan struct{})
		attemptOpts := append(append(b.connOptions(cfg.Name, closed), opts...), nats.Timeout(timeout))
		nc, err := nats.Connect(strings.Join(servers.urls, ","), attemptOpts...)
		if err == nil {
			if err := b.attach(ctx, nc, closed); err != nil {
				return nil, servers.redact(fmt.Errorf("connect to nats %s: %w", servers.display, err))
			}
			logger.Info("connected to nats", "servers", servers.display, "attempts", attempt)
			return b, nil
		}
		if permanent(err) {
			return nil, servers.redact(fmt.Errorf("connect to nats %s: %w", servers.display, err))
		}
		// Full jitter: replicas starting together spread their retries.
		wait := time.Duration(rand.Int64N(int64(backoff))) + time.Millisecond
		backoff = min(2*backoff, 2*time.Second)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, servers.redact(fmt.Errorf("connect to nats %s: gave up after %d attempts: %w", servers.display, attempt, err))
		case <-timer.C:
		}
	}
}

// permanent reports errors that retrying cannot fix: refused credentials, a TLS mismatch, a
// server certificate the configured CA does not vouch for.
func permanent(err error) bool {
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrSecureConnRequired, nats.ErrSecureConnWanted} {
		if errors.Is(err, e) {
			return true
		}
	}
	var certErr *tls.CertificateVerificationError
	return errors.As(err, &certErr)
}

// connOptions are the options shared by both modes: name, state-change logging, and closed, which
// is closed once the connection is.
func (b *Bus) connOptions(name string, closed chan struct{}) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.DrainTimeout(drainTimeout),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				b.logger.Warn("nats connection lost", "error", err.Error())
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			// ConnectedAddr, not the URL: a token URL's redacted form still shows the token.
			b.logger.Info("nats connection restored", "server", nc.ConnectedAddr())
			b.signalReconnect()
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			b.logger.Warn("nats asynchronous error", "subject", subject, "error", err.Error())
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	}
}

// newBus returns a Bus for cfg (with defaults) without a connection yet.
func newBus(cfg Config, logger *slog.Logger) *Bus {
	ns := strings.ToUpper(cfg.Namespace)
	return &Bus{
		cfg:         cfg,
		logger:      logger,
		ins:         cfg.Instruments,
		subj:        bus.Subjects{NS: cfg.Namespace},
		eventsName:  ns + "_EVENTS",
		dlqName:     ns + "_DLQ",
		slots:       make(chan struct{}, cfg.MaxPending),
		batchGate:   make(chan struct{}, 1),
		subs:        map[*subscription]struct{}{},
		reconnected: make(chan struct{}),
	}
}

// attach finishes Open once nc is connected: JetStream contexts, a first JetStream request and
// the streams. On failure nc is closed and its callbacks have finished.
func (b *Bus) attach(ctx context.Context, nc *nats.Conn, closed chan struct{}) error {
	fail := func(err error) error {
		nc.Close()
		<-closed
		return err
	}
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.AccountInfo(ctx)
	}
	if err != nil {
		return fail(fmt.Errorf("jetstream is not usable: %w", err))
	}
	// The bus's own publishes get their own context: its window (MaxPending) and ack timeout
	// must not be shared with whatever the events work publishes through JetStream().
	pubJS, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(b.cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(b.cfg.ackTimeout()))
	if err != nil {
		return fail(fmt.Errorf("jetstream publisher: %w", err))
	}
	b.nc, b.js, b.pubJS, b.closed = nc, js, pubJS, closed
	b.multiFilter = supportsMultiFilter(nc.ConnectedServerVersion())
	if !b.multiFilter {
		b.logger.Info("nats server before 2.10: each consumer filter subject gets a consumer of its own", "version", nc.ConnectedServerVersion())
	}
	b.allowAtomic = b.cfg.AtomicBatchMin > 0 && serverAtLeast(nc.ConnectedServerVersion(), 2, 12)
	if err := b.ensureStreams(ctx); err != nil {
		return fail(err)
	}
	return nil
}

// Conn is the underlying connection, for the events work.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the JetStream API on Conn.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// ClientURL is the nats:// URL on which the embedded server accepts TCP clients, or "" when it
// has no TCP listener or the bus is external.
func (b *Bus) ClientURL() string {
	if b.srv == nil {
		return ""
	}
	addr := b.srv.Addr()
	if addr == nil {
		return ""
	}
	return "nats://" + addr.String()
}

// Ping fails at once when the connection is not up (reconnecting, closed) and otherwise asks
// JetStream for both streams, so a NATS without a usable JetStream, or whose streams were
// deleted, is not ready. Errors carry errs.Unavailable.
func (b *Bus) Ping(ctx context.Context) error {
	if st := b.nc.Status(); st != nats.CONNECTED {
		return errs.Wrap(errs.Unavailable, fmt.Errorf("nats connection is %s", st), "event bus unavailable")
	}
	for _, s := range []jetstream.Stream{b.events, b.dlq} {
		if _, err := s.Info(ctx); err != nil {
			return errs.Wrap(errs.Unavailable, fmt.Errorf("jetstream stream %s: %w", s.CachedInfo().Config.Name, err), "event bus unavailable")
		}
	}
	return nil
}

// closeSubsTimeout bounds how long Close waits for running handlers; a handler still running
// then is abandoned and its message is delivered again after its AckWait.
const closeSubsTimeout = 30 * time.Second

// Close stops every subscription (waiting up to 30 s for their running handlers to settle their
// messages and for the server to confirm their acknowledgements), waits for the publishes in flight, drains the connection and shuts the embedded
// server down. Publish and Subscribe fail once Close has begun. Later calls return the first
// call's result.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closing = true
		subs := make([]*subscription, 0, len(b.subs))
		for s := range b.subs {
			subs = append(subs, s)
		}
		b.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), closeSubsTimeout)
		for _, s := range subs {
			s.cancel()
		}
		for _, s := range subs {
			if err := s.wait(ctx); err != nil {
				b.logger.Warn("closing the bus: a subscription's handlers did not finish", "consumer", s.cfg.Name, "error", err.Error())
			}
		}
		cancel()
		b.mu.Lock()
		b.sealed = true
		b.mu.Unlock()
		// Every publish waits at most PublishTimeout for room and then for each
		// acknowledgement, which the client times out itself.
		b.inflight.Wait()

		if err := b.nc.Drain(); err != nil {
			// Not connected (reconnecting or already closed): nothing to drain.
			b.nc.Close()
		}
		select {
		case <-b.closed:
		case <-time.After(drainTimeout + time.Second):
			b.nc.Close()
			b.closeErr = errors.New("close nats connection: drain did not finish")
		}
		if b.srv != nil {
			b.srv.Shutdown()
			b.srv.WaitForShutdown()
		}
	})
	return b.closeErr
}

// begin registers a sending call; it fails once Close has begun, or, for dead letters (which
// the handlers Close waits for may still write), once Close has stopped the subscriptions. The
// caller calls b.inflight.Done when it no longer waits for anything.
func (b *Bus) begin(deadLetter bool) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.sealed || (b.closing && !deadLetter) {
		return errs.Wrap(errs.Unavailable, errors.New("the nats bus is closed"), "event bus unavailable")
	}
	b.inflight.Add(1)
	return nil
}

// servers is a parsed URL list: what to dial, what to show, and what to scrub from errors.
type servers struct {
	urls    []string
	display string
	secrets []string
}

// parseURLs validates raw itself because a url.Parse error quotes the whole URL, credentials
// included; nats.Connect would return such errors verbatim.
func parseURLs(raw string) (servers, error) {
	var s servers
	var hosts []string
	for i, part := range strings.Split(raw, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "://") {
			part = "nats://" + part
		}
		u, err := url.Parse(part)
		if err != nil || u.Host == "" {
			return servers{}, fmt.Errorf("connect to nats: server URL number %d is malformed", i+1)
		}
		if u.User != nil {
			// A user without a password is a token: secret as a whole.
			if pw, ok := u.User.Password(); ok {
				s.secrets = append(s.secrets, pw, url.QueryEscape(pw))
			} else {
				name := u.User.Username()
				s.secrets = append(s.secrets, name, url.QueryEscape(name))
			}
		}
		s.urls = append(s.urls, u.String())
		hosts = append(hosts, u.Host)
	}
	if len(s.urls) == 0 {
		return servers{}, errors.New("connect to nats: no server URL")
	}
	s.display = strings.Join(hosts, ",")
	return s, nil
}

// redact returns err with every credential of the URLs removed from its text.
func (s servers) redact(err error) error { return errs.Redact(err, s.secrets...) }

// serverLogger routes the embedded server's log to slog. Notices are routine (start-up banner,
// listening address) and go to debug; warnings and errors keep their level. Fatalf is how the
// server reports a failed start: it is logged as an error and handed to Open.
type serverLogger struct {
	log   *slog.Logger
	fatal chan error
}

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- errors.New(msg):
	default: // Open already has the first failure.
	}
}
