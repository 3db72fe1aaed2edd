package netguard_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/netguard"
)

// acceptor runs Accept on a guarded listener and hands out what it accepted.
type acceptor struct {
	l        *netguard.Listener
	accepted chan net.Conn
	done     chan struct{}
}

func newAcceptor(t *testing.T, cfg netguard.Config, m *meter) *acceptor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := netguard.NewListener(ln, cfg, netguard.Options{MeterProvider: m.mp})
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptor{l: l, accepted: make(chan net.Conn, 100), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.accepted <- c
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-a.done
		close(a.accepted)
		for c := range a.accepted {
			_ = c.Close()
		}
	})
	return a
}

// next returns the next accepted connection, failing after a deadline.
func (a *acceptor) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-a.accepted:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// wantRefused dials addr from src and checks that the server closed the connection without
// sending anything. On loopback the reset may arrive before the dial returns.
func wantRefused(t *testing.T, src, addr string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial from %s: %v, want success or a reset", src, err)
		}
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read on a connection from %s beyond the cap = %d, %v; want it closed by the server", src, n, err)
	}
}

func TestListenerCaps(t *testing.T) {
	m := newMeter(t)
	a := newAcceptor(t, netguard.Config{MaxConnsPerIP: 2, MaxConns: 3}, m)
	addr := a.l.Addr().String()

	// Refusals first: a third connection from one IP, then a fourth in total.
	c1 := dialFrom(t, "127.0.0.1", addr)
	s1 := a.next(t)
	dialFrom(t, "127.0.0.1", addr)
	a.next(t)
	wantRefused(t, "127.0.0.1", addr)
	dialFrom(t, "127.0.0.2", addr)
	a.next(t)
	wantRefused(t, "127.0.0.3", addr)
	wantRefused(t, "127.0.0.2", addr)

	want := map[string]int64{netguard.ReasonPerIP: 1, netguard.ReasonTotal: 2}
	if diff := cmp.Diff(want, m.sums(t, "nops_conn_refused_total")); diff != "" {
		t.Errorf("nops_conn_refused_total (-want +got):\n%s", diff)
	}
	if got := m.sums(t, "nops_conn_open")[""]; got != 3 || a.l.Open() != 3 {
		t.Errorf("open: gauge %d, Open() %d; want 3", got, a.l.Open())
	}

	// The admitted connections work.
	if _, err := c1.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s1, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}

	// Closing releases the slot, for the IP and the total, once.
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	_ = s1.Close()
	if a.l.Open() != 2 {
		t.Fatalf("Open() = %d after closing one of 3 twice, want 2", a.l.Open())
	}
	dialFrom(t, "127.0.0.1", addr)
	a.next(t)
	wantRefused(t, "127.0.0.1", addr)
	if got := m.sums(t, "nops_conn_refused_total")[netguard.ReasonPerIP]; got != 2 {
		t.Errorf("per_ip refusals = %d, want 2", got)
	}
}

// A negative cap disables it.
func TestListenerUncapped(t *testing.T) {
	a := newAcceptor(t, netguard.Config{MaxConnsPerIP: -1, MaxConns: -1}, newMeter(t))
	for range 5 {
		dialFrom(t, "127.0.0.1", a.l.Addr().String())
		a.next(t)
	}
	if a.l.Open() != 5 {
		t.Errorf("Open() = %d, want 5", a.l.Open())
	}
}

func TestListenerConfig(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, bad := range []int{-1, 129} {
		if _, err := netguard.NewListener(ln, netguard.Config{IPv6PrefixLen: bad}, netguard.Options{}); err == nil {
			t.Errorf("IPv6PrefixLen %d accepted", bad)
		}
	}
	l, err := netguard.NewListener(ln, netguard.Config{}, netguard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := netguard.Config{MaxConnsPerIP: 256, MaxConns: 8192, IPv6PrefixLen: 64, WriteStallTimeout: 30 * time.Second}
	if diff := cmp.Diff(want, l.Config()); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestListenerKeys(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l48, err := netguard.NewListener(ln, netguard.Config{IPv6PrefixLen: 48}, netguard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l64, err := netguard.NewListener(ln, netguard.Config{}, netguard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		l      *netguard.Listener
		addr   net.Addr
		want   string
		wantOK bool
	}{
		{l64, &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}, "192.0.2.1/32", true},
		{l64, &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}, "192.0.2.1/32", true},
		{l64, &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64", true},
		{l64, &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, "fe80::/64", true},
		{l48, &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1::/48", true},
		{l64, &net.UDPAddr{IP: net.ParseIP("192.0.2.9"), Port: 1}, "192.0.2.9/32", true},
		{l64, &net.UnixAddr{Name: "/run/nops.sock", Net: "unix"}, "", false},
		{l64, &net.TCPAddr{}, "", false},
	}
	for _, tt := range tests {
		got, ok := tt.l.KeyOf(tt.addr)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("KeyOf(%v) = %q, %v; want %q, %v", tt.addr, got, ok, tt.want, tt.wantOK)
		}
	}
}

// writeUntilError writes to c until a Write fails, giving up (and failing) after a deadline
// by closing c.
func writeUntilError(t *testing.T, c net.Conn) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(20 * time.Second):
		_ = c.Close()
		<-errc
		t.Fatal("writes to a peer that does not read never failed")
		return nil
	}
}

// A slow reader: Writes to a peer that reads nothing block once the socket buffers are full, and
// the stall timeout ends them.
func TestWriteStallCutsASlowReader(t *testing.T) {
	a := newAcceptor(t, netguard.Config{WriteStallTimeout: 200 * time.Millisecond}, newMeter(t))
	dialFrom(t, "127.0.0.1", a.l.Addr().String()) // never reads
	s := a.next(t)
	if err := writeUntilError(t, s); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("write error %v, want a deadline exceeded", err)
	}
}

// An explicit write deadline earlier than the stall timeout applies.
func TestWriteStallKeepsAnEarlierExplicitDeadline(t *testing.T) {
	a := newAcceptor(t, netguard.Config{WriteStallTimeout: time.Hour}, newMeter(t))
	dialFrom(t, "127.0.0.1", a.l.Addr().String())
	s := a.next(t)
	if err := s.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := writeUntilError(t, s); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("write error %v, want a deadline exceeded", err)
	}
}

// A reader that keeps up is never cut, however long the stream lasts: the timeout bounds each
// Write, not the response.
func TestWriteStallSparesAStreamingReader(t *testing.T) {
	const stall = 100 * time.Millisecond
	a := newAcceptor(t, netguard.Config{WriteStallTimeout: stall}, newMeter(t))
	c := dialFrom(t, "127.0.0.1", a.l.Addr().String())
	s := a.next(t)
	var wg sync.WaitGroup
	var read int64
	wg.Go(func() { read, _ = io.Copy(io.Discard, c) })
	start, writes := time.Now(), 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < 5*stall { // the stream outlives the stall timeout
		<-tick.C
		if _, err := s.Write([]byte("data: event\n\n")); err != nil {
			t.Fatalf("write %d after %s: %v", writes, time.Since(start), err)
		}
		writes++
	}
	_ = s.Close()
	wg.Wait()
	if read != int64(writes*len("data: event\n\n")) {
		t.Errorf("reader got %d bytes of %d writes", read, writes)
	}
}

// CloseWrite reaches the TCP connection (http.Server relies on it to deliver an error response
// before resetting a connection with unread input).
func TestCloseWrite(t *testing.T) {
	a := newAcceptor(t, netguard.Config{}, newMeter(t))
	c := dialFrom(t, "127.0.0.1", a.l.Addr().String())
	s := a.next(t)
	if _, err := s.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := s.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
		t.Errorf("client read %q, %v; want bye then EOF", b, err)
	}
	if nc := s.(interface{ NetConn() net.Conn }).NetConn(); nc == s {
		t.Error("NetConn returned the wrapper")
	}
}
