// Package natsbus is the NATS JetStream adapter of the kernel's event bus (bus.Bus). By default
// it starts a NATS server with JetStream inside the process (file store under the data
// directory, no TCP port unless asked for) and connects to it in-process; with a URL it connects
// to an external NATS instead, reconnecting for ever with jittered waits.
//
// Only internal/kernel (and tests) import natsbus; domain packages use bus.Bus. The events work
// builds publishing and consumers on Conn and JetStream.
//
// Secrets: a URL may carry a user and password or a token. They never appear in errors or logs:
// messages name the servers by host:port only.
//
// Concurrency: a Bus is safe for concurrent use. Close may be called more than once.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
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
	// external NATS. Default 10 s.
	ConnectTimeout time.Duration
}

// Bus is a connection to NATS JetStream, and the embedded server when there is one.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	srv    *server.Server // nil for an external NATS
	logger *slog.Logger
	closed chan struct{} // closed by the connection's ClosedHandler

	closeOnce sync.Once
	closeErr  error
}

var _ bus.Bus = (*Bus)(nil)

// Open starts (embedded) or connects to (external) NATS and checks that JetStream is enabled.
// A nil logger discards the bus's logs.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Bus, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.Name == "" {
		cfg.Name = defaultName
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
	b := &Bus{srv: srv, logger: logger}
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
	b := &Bus{logger: logger}
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
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

// permanent reports errors that retrying cannot fix.
func permanent(err error) bool {
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrSecureConnRequired, nats.ErrSecureConnWanted} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
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

// attach finishes Open once nc is connected: JetStream context and a first JetStream request.
// On failure nc is closed and its callbacks have finished.
func (b *Bus) attach(ctx context.Context, nc *nats.Conn, closed chan struct{}) error {
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.AccountInfo(ctx)
	}
	if err != nil {
		nc.Close()
		<-closed
		return fmt.Errorf("jetstream is not usable: %w", err)
	}
	b.nc, b.js, b.closed = nc, js, closed
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
// JetStream for the account information, so a NATS without a usable JetStream is not ready.
// Errors carry errs.Unavailable.
func (b *Bus) Ping(ctx context.Context) error {
	if st := b.nc.Status(); st != nats.CONNECTED {
		return errs.Wrap(errs.Unavailable, fmt.Errorf("nats connection is %s", st), "event bus unavailable")
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return errs.Wrap(errs.Unavailable, fmt.Errorf("jetstream account info: %w", err), "event bus unavailable")
	}
	return nil
}

// Close drains the connection (pending publishes are flushed, subscriptions finish their
// messages) and shuts the embedded server down, waiting for both. Later calls return the first
// call's result.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() {
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
