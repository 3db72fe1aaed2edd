package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// envProfile is benchkit's CPU-profile variable; children must not inherit it, or they would
// overwrite the parent's profile with their own.
const envProfile = "NOPS_BENCH_CPUPROFILE"

// child is a process of this program started with -role (an agent or a kernel).
type child struct {
	client *http.Client // the parent's requests to it
	name   string
	addr   string // host:port it listens on
	cmd    *exec.Cmd
	stdin  io.Closer
	done   chan error
	grace  time.Duration // how long stop waits before killing it

	stopOnce sync.Once
}

// URL returns the child's base URL.
func (c *child) URL() string { return "http://" + c.addr }

// startChild re-executes this program with args (which start with -role) and waits for the
// "listening <addr>" line the child prints once it accepts connections. The child's stderr
// goes to stderr; it exits when its stdin reaches EOF (see parentGone), which stop causes and
// the parent's death causes too.
func startChild(ctx context.Context, name string, grace time.Duration, stderr io.Writer, args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = childEnv(os.Environ())
	cmd.Stderr = stderr
	first := &firstLine{line: make(chan string, 1)}
	cmd.Stdout = first
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{client: &http.Client{Transport: &http.Transport{}, Timeout: requestTimeout}, name: name, cmd: cmd, stdin: in,
		done: make(chan error, 1), grace: grace}
	go func() { c.done <- cmd.Wait() }()
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	select {
	case l := <-first.line:
		addr, ok := strings.CutPrefix(l, "listening ")
		if !ok {
			c.stop()
			return nil, fmt.Errorf("%s: unexpected first line %q", name, l)
		}
		c.addr = addr
		return c, nil
	case err := <-c.done:
		return nil, fmt.Errorf("%s exited at start: %v", name, err)
	case <-timer.C:
		c.stop()
		return nil, fmt.Errorf("%s: no address within a minute", name)
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

// firstLine is a child's stdout: it hands over the first line and discards the rest. Only
// exec's copying goroutine writes to it.
type firstLine struct {
	buf  []byte
	sent bool
	line chan string
}

func (f *firstLine) Write(p []byte) (int, error) {
	if f.sent {
		return len(p), nil
	}
	f.buf = append(f.buf, p...)
	if i := strings.IndexByte(string(f.buf), '\n'); i >= 0 {
		f.sent = true
		f.line <- strings.TrimSpace(string(f.buf[:i]))
		f.buf = nil
	}
	return len(p), nil
}

// childEnv is env without the CPU-profile variable.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, envProfile+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// stop closes the child's stdin (it shuts down at EOF) and kills it if it has not exited
// within its grace period. Calls after the first return at once.
func (c *child) stop() {
	c.stopOnce.Do(func() {
		c.client.CloseIdleConnections()
		_ = c.stdin.Close()
		timer := time.NewTimer(c.grace)
		defer timer.Stop()
		select {
		case <-c.done:
		case <-timer.C:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
}

// parentGone is closed when this process's stdin reaches EOF: in a child, the parent closed
// the pipe (stop) or died.
func parentGone() <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(gone)
	}()
	return gone
}
