package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer is an upstream that writes back every line it reads. It is closed at cleanup, with
// every connection it accepted.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// roundTrip sends one line through a fresh connection and reports whether it came back.
func roundTrip(t *testing.T, addr string) error {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return echo(c)
}

func echo(c net.Conn) error {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return errors.New("echo mismatch: " + line)
	}
	return nil
}

// waitClosed reads from c until it fails and requires the failure to be a dropped connection,
// not the 5 s deadline.
func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("connection still open 5 s after Cut")
		}
		return
	}
}

func TestForwards(t *testing.T) {
	p := New(t, echoServer(t))
	if err := roundTrip(t, p.Addr()); err != nil {
		t.Fatalf("round trip through proxy: %v", err)
	}
}

func TestCutDropsOpenConnections(t *testing.T) {
	p := New(t, echoServer(t))
	idle, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := echo(idle); err != nil {
		t.Fatalf("echo before cut: %v", err)
	}
	p.Cut()
	waitClosed(t, idle)
}

func TestCutDropsBusyConnections(t *testing.T) {
	// A client writing without pause must be dropped too, not only idle ones.
	p := New(t, echoServer(t))
	busy, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		chunk := make([]byte, 512)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := busy.Write(chunk); err != nil {
				return
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	p.Cut()
	waitClosed(t, busy)
}

func TestCutFailsNewConnectionsAndRestoreHeals(t *testing.T) {
	p := New(t, echoServer(t))
	addr := p.Addr()
	for cycle := range 3 {
		p.Cut()
		p.Cut() // idempotent
		for range 3 {
			if err := roundTrip(t, p.Addr()); err == nil {
				t.Fatalf("cycle %d: round trip succeeded during the outage", cycle)
			} else if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("cycle %d: round trip hung instead of failing: %v", cycle, err)
			}
		}
		p.Restore()
		p.Restore() // idempotent
		if err := roundTrip(t, p.Addr()); err != nil {
			t.Fatalf("cycle %d: round trip after restore: %v", cycle, err)
		}
		if p.Addr() != addr {
			t.Fatalf("cycle %d: address changed from %s to %s", cycle, addr, p.Addr())
		}
	}
}

func TestRestoreWithoutCut(t *testing.T) {
	p := New(t, echoServer(t))
	p.Restore()
	if err := roundTrip(t, p.Addr()); err != nil {
		t.Fatalf("round trip: %v", err)
	}
}

func TestClosedAtCleanup(t *testing.T) {
	upstream := echoServer(t)
	var addr string
	var open net.Conn
	t.Run("owner", func(t *testing.T) {
		p := New(t, upstream)
		addr = p.Addr()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := echo(c); err != nil {
			t.Fatal(err)
		}
		open = c
	})
	defer open.Close()
	waitClosed(t, open)
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("proxy still accepts connections on %s after its test ended", addr)
	}
}
