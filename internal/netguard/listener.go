package netguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// meterName is the instrumentation scope of the listener's metrics.
const meterName = "github.com/nops-kernel/nops/internal/netguard"

// Defaults of Config.
const (
	// DefaultMaxConnsPerIP leaves room for a NAT or an office of clients behind one address and
	// for client connection pools, while one host cannot hold more than a small share of
	// DefaultMaxConns.
	DefaultMaxConnsPerIP = 256
	// DefaultMaxConns stays well below the usual file-descriptor limits.
	DefaultMaxConns = 8192
	// DefaultIPv6PrefixLen groups IPv6 peers by the /64 one subscriber usually holds.
	DefaultIPv6PrefixLen = 64
	// DefaultWriteStallTimeout is how long one Write may block on a peer that does not read.
	DefaultWriteStallTimeout = 30 * time.Second
)

// Refusal reasons, the values of the reason attribute of nops_conn_refused_total.
const (
	ReasonPerIP = "per_ip"
	ReasonTotal = "total"
)

// Config sizes a Listener. Zero values take the defaults; a negative value disables the limit.
type Config struct {
	// MaxConnsPerIP caps the open connections of one client IP (IPv6: of one prefix).
	MaxConnsPerIP int
	// MaxConns caps the open connections in total.
	MaxConns int
	// IPv6PrefixLen is the prefix length IPv6 peers are grouped by (1 to 128).
	IPv6PrefixLen int
	// WriteStallTimeout bounds each Write to a connection (see the package doc).
	WriteStallTimeout time.Duration
}

// withDefaults fills zero values and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.IPv6PrefixLen == 0 {
		c.IPv6PrefixLen = DefaultIPv6PrefixLen
	}
	if c.WriteStallTimeout == 0 {
		c.WriteStallTimeout = DefaultWriteStallTimeout
	}
	if c.IPv6PrefixLen < 1 || c.IPv6PrefixLen > 128 {
		return c, fmt.Errorf("netguard: ipv6 prefix length must be 1 to 128, got %d", c.IPv6PrefixLen)
	}
	return c, nil
}

// Options are the Listener's optional dependencies.
type Options struct {
	// Logger receives refusals at debug level (an attack must not flood the log; the counter
	// tells the volume). Nil: discarded.
	Logger *slog.Logger
	// MeterProvider supplies the metrics. Nil: no metrics.
	MeterProvider metric.MeterProvider
}

// Listener is a net.Listener admitting connections within the caps of its Config.
type Listener struct {
	net.Listener
	cfg     Config
	logger  *slog.Logger
	refused metric.Int64Counter
	open    metric.Int64UpDownCounter

	mu    sync.Mutex
	total int
	perIP map[netip.Prefix]int // only keys with open connections
}

// NewListener wraps ln.
func NewListener(ln net.Listener, cfg Config, opts Options) (*Listener, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = noop.NewMeterProvider()
	}
	l := &Listener{Listener: ln, cfg: cfg, logger: opts.Logger, perIP: map[netip.Prefix]int{}}
	meter := opts.MeterProvider.Meter(meterName)
	if l.refused, err = meter.Int64Counter("nops_conn_refused_total",
		metric.WithDescription("Connections closed at accept because a cap was reached, by reason (per_ip, total).")); err != nil {
		return nil, fmt.Errorf("netguard: create refused counter: %w", err)
	}
	if l.open, err = meter.Int64UpDownCounter("nops_conn_open", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections open through the guarded listener.")); err != nil {
		return nil, fmt.Errorf("netguard: create open gauge: %w", err)
	}
	return l, nil
}

// Config returns the listener's configuration with the defaults filled in.
func (l *Listener) Config() Config { return l.cfg }

// Open returns the number of connections admitted and not yet closed.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Accept returns the next connection within the caps, closing those beyond them.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, keyed := l.keyOf(c.RemoteAddr())
		if reason := l.admit(key, keyed); reason != "" {
			l.refuse(c, reason)
			continue
		}
		l.open.Add(context.Background(), 1)
		return &conn{Conn: c, l: l, key: key, keyed: keyed, stall: l.cfg.WriteStallTimeout}, nil
	}
}

// keyOf groups a peer address: the IPv4 address, or the IPv6 prefix. A peer that is not an IP
// (a unix socket) has no key and only counts toward the total.
func (l *Listener) keyOf(a net.Addr) (netip.Prefix, bool) {
	var addr netip.Addr
	switch t := a.(type) {
	case *net.TCPAddr:
		addr, _ = netip.AddrFromSlice(t.IP)
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Prefix{}, false
		}
		addr = ap.Addr()
	}
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() {
		return netip.Prefix{}, false
	}
	bits := 32
	if addr.Is6() {
		bits = l.cfg.IPv6PrefixLen
	}
	p, err := addr.Prefix(bits)
	return p, err == nil
}

// admit counts a new connection in, or returns why it is refused.
func (l *Listener) admit(key netip.Prefix, keyed bool) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if keyed && l.cfg.MaxConnsPerIP > 0 && l.perIP[key] >= l.cfg.MaxConnsPerIP {
		return ReasonPerIP
	}
	if l.cfg.MaxConns > 0 && l.total >= l.cfg.MaxConns {
		return ReasonTotal
	}
	l.total++
	if keyed {
		l.perIP[key]++
	}
	return ""
}

func (l *Listener) release(key netip.Prefix, keyed bool) {
	l.mu.Lock()
	l.total--
	if keyed {
		if n := l.perIP[key] - 1; n > 0 {
			l.perIP[key] = n
		} else {
			delete(l.perIP, key)
		}
	}
	l.mu.Unlock()
	l.open.Add(context.Background(), -1)
}

// refuse closes c with an RST, so the kernel keeps no TIME_WAIT state for a refused peer. It
// counts before closing, so a peer that saw the reset finds it counted.
func (l *Listener) refuse(c net.Conn, reason string) {
	l.refused.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", reason)))
	l.logger.Debug("connection refused", "reason", reason, "peer", c.RemoteAddr().String())
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// conn releases its slot on Close and bounds each Write by the stall timeout.
type conn struct {
	net.Conn
	l     *Listener
	key   netip.Prefix
	keyed bool
	stall time.Duration
	once  sync.Once

	mu       sync.Mutex
	deadline time.Time // the write deadline set explicitly; zero: none
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key, c.keyed) })
	return err
}

// Write sets the write deadline to the earlier of now+stall and the explicit deadline.
func (c *conn) Write(b []byte) (int, error) {
	if c.stall > 0 {
		d := time.Now().Add(c.stall)
		c.mu.Lock()
		if !c.deadline.IsZero() && c.deadline.Before(d) {
			d = c.deadline
		}
		c.mu.Unlock()
		if err := c.Conn.SetWriteDeadline(d); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(b)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// CloseWrite half-closes a TCP connection. http.Server uses it to let the client read an error
// response before the connection is reset; hiding it behind the wrapper would lose that.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NetConn returns the wrapped connection.
func (c *conn) NetConn() net.Conn { return c.Conn }
