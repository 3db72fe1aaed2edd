// Command natsfailover measures how long publishing to a replicated JetStream stream pauses when
// the stream's leader goes away, and whether anything acknowledged is lost: the external-NATS
// deployment of docs/operations.md (three nats-server processes, a stream with three replicas).
//
// Each round starts a fresh three-node cluster of the nats-server binary given by -nats-server
// (processes on free loopback ports, JetStream in a temporary directory), creates a stream with
// three replicas, publishes to it continuously from one goroutine (a synchronous publish with an
// ack wait of -ack-wait), and after -before sends the stream leader a signal:
//
//   - kill: SIGKILL, a crash (the followers elect a new leader after their Raft election timeout);
//   - term: SIGTERM, a graceful shutdown;
//   - ldm: SIGUSR2, lame-duck mode (the server hands its leaderships over, then shuts down).
//
// It reports the longest time without an acknowledged publish, the publishes acknowledged, and
// the messages the stream holds at the end (acknowledged messages missing from it are lost;
// one more than acknowledged is a publish whose ack timed out but which was stored). It is a
// program, not a test: nothing here asserts a timing. Results: docs/benchmarks.md.
//
// Usage:
//
//	go build -o /tmp/nats-server github.com/nats-io/nats-server/v2   # the server of go.mod, or Debian's
//	go run ./bench/natsfailover -nats-server /tmp/nats-server -mode kill,term -rounds 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
)

type options struct {
	server  string
	modes   []string
	rounds  int
	before  time.Duration
	after   time.Duration
	ackWait time.Duration
}

var signals = map[string]syscall.Signal{"kill": syscall.SIGKILL, "term": syscall.SIGTERM, "ldm": syscall.SIGUSR2}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("natsfailover", flag.ContinueOnError)
	fs.StringVar(&o.server, "nats-server", "nats-server", "the nats-server binary")
	modes := fs.String("mode", "kill,term", "comma-separated: kill (SIGKILL), term (SIGTERM), ldm (SIGUSR2, lame duck)")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds per mode, each on a fresh cluster")
	fs.DurationVar(&o.before, "before", 2*time.Second, "publishing before the leader is signalled")
	fs.DurationVar(&o.after, "after", 15*time.Second, "publishing after the leader is signalled")
	fs.DurationVar(&o.ackWait, "ack-wait", time.Second, "how long one publish waits for its ack")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for m := range strings.SplitSeq(*modes, ",") {
		if _, ok := signals[m]; !ok {
			return o, fmt.Errorf("-mode: unknown mode %q (kill, term, ldm)", m)
		}
		o.modes = append(o.modes, m)
	}
	if o.rounds < 1 || o.before <= 0 || o.after <= 0 || o.ackWait <= 0 {
		return o, errors.New("-rounds, -before, -after and -ack-wait must be positive")
	}
	return o, nil
}

func main() { benchkit.Main("natsfailover", parse, run) }

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	out, err := exec.CommandContext(ctx, o.server, "--version").Output()
	if err != nil {
		return fmt.Errorf("-nats-server %s: %w", o.server, err)
	}
	fmt.Fprintf(stdout, "%s; publish ack wait %s; leader signalled after %s of publishing, %s measured after.\n\n",
		strings.TrimSpace(string(out)), o.ackWait, o.before, o.after)
	fmt.Fprintln(stdout, "| mode | round | longest gap without an acked publish | acked | in the stream | lost |")
	fmt.Fprintln(stdout, "|---|---:|---:|---:|---:|---:|")
	for _, m := range o.modes {
		for r := 1; r <= o.rounds; r++ {
			res, err := round(ctx, o, signals[m])
			if err != nil {
				return fmt.Errorf("%s round %d: %w", m, r, err)
			}
			lost := max(res.acked-res.stored, 0)
			fmt.Fprintf(stdout, "| %s | %d | %.2f s | %d | %d | %d |\n", m, r, res.gap.Seconds(), res.acked, res.stored, lost)
		}
	}
	return nil
}

type result struct {
	gap           time.Duration
	acked, stored int64
}

// round runs one cluster, one stream, one signal.
func round(ctx context.Context, o options, sig syscall.Signal) (result, error) {
	dir, err := os.MkdirTemp("", "natsfailover")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	var clientPorts, routePorts [3]int
	for i := range 3 {
		if clientPorts[i], err = freePort(); err != nil {
			return result{}, err
		}
		if routePorts[i], err = freePort(); err != nil {
			return result{}, err
		}
	}
	routes := make([]string, 3)
	urls := make([]string, 3)
	for i := range 3 {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i])
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i])
	}
	procs := map[string]*exec.Cmd{}
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	for i := range 3 {
		name := fmt.Sprintf("n%d", i)
		conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\njetstream { store_dir: %q }\ncluster { name: failover, listen: 127.0.0.1:%d, routes: [%s] }\n",
			name, clientPorts[i], filepath.Join(dir, name), routePorts[i], strings.Join(routes, ", "))
		file := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			return result{}, err
		}
		cmd := exec.Command(o.server, "-c", file)
		if err := cmd.Start(); err != nil {
			return result{}, fmt.Errorf("start %s: %w", name, err)
		}
		procs[name] = cmd
	}

	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		return result{}, err
	}
	defer nc.Close()
	js, err := nc.JetStream(nats.MaxWait(2 * time.Second))
	if err != nil {
		return result{}, err
	}
	if err := retry(ctx, 30*time.Second, func() error {
		_, err := js.AddStream(&nats.StreamConfig{Name: "FAILOVER", Subjects: []string{"failover.>"}, Replicas: 3})
		return err
	}); err != nil {
		return result{}, fmt.Errorf("create the stream: %w", err)
	}
	var info *nats.StreamInfo
	if err := retry(ctx, 30*time.Second, func() error {
		if _, err := js.Publish("failover.x", []byte("first"), nats.AckWait(o.ackWait)); err != nil {
			return err
		}
		info, err = js.StreamInfo("FAILOVER")
		if err == nil && (info.Cluster == nil || info.Cluster.Leader == "") {
			err = errors.New("no leader yet")
		}
		return err
	}); err != nil {
		return result{}, fmt.Errorf("first publish: %w", err)
	}
	leader := procs[info.Cluster.Leader]
	if leader == nil {
		return result{}, fmt.Errorf("leader %q is not one of the cluster's servers", info.Cluster.Leader)
	}

	res := result{acked: 1}
	start := time.Now()
	signalled := false
	last := time.Now()
	for time.Since(start) < o.before+o.after {
		if err := ctx.Err(); err != nil {
			return result{}, err
		}
		if !signalled && time.Since(start) >= o.before {
			if err := leader.Process.Signal(sig); err != nil {
				return result{}, fmt.Errorf("signal the leader: %w", err)
			}
			signalled = true
		}
		if _, err := js.Publish("failover.x", []byte("x"), nats.AckWait(o.ackWait)); err == nil {
			now := time.Now()
			res.gap = max(res.gap, now.Sub(last))
			last = now
			res.acked++
		}
	}
	if err := retry(ctx, 30*time.Second, func() error {
		info, err = js.StreamInfo("FAILOVER")
		return err
	}); err != nil {
		return result{}, fmt.Errorf("stream info at the end: %w", err)
	}
	res.stored = int64(info.State.Msgs)
	return res, nil
}

func retry(ctx context.Context, within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
