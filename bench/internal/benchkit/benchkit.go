// Package benchkit holds what the benchmark programs under bench/ share: the main function's
// skeleton (flags, signals, exit codes) and the formatting of their reports. Only bench/ imports it.
package benchkit

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"github.com/redis/go-redis/v9"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// Main parses the command line with parse and runs run until it returns or the process is
// interrupted; it exits 2 on a flag error, 1 when run fails (printing "<name> bench: <error>").
func Main[O any](name string, parse func([]string) (O, error), run func(ctx context.Context, o O, stdout, stderr io.Writer) error) {
	o, err := parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile, err := startProfile(os.Getenv("NOPS_BENCH_CPUPROFILE"))
	if err == nil {
		err = run(ctx, o, os.Stdout, os.Stderr)
		err = errors.Join(err, stopProfile())
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+" bench:", err)
		os.Exit(1)
	}
}

// startProfile writes a CPU profile of the whole run to path (NOPS_BENCH_CPUPROFILE), for
// finding where a benchmark's time goes; "" profiles nothing.
func startProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(fmt.Errorf("cpu profile: %w", err), f.Close())
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// Ms renders d in milliseconds with two decimals.
func Ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// Ratio renders v/base as "1.23×", or "–" without a baseline.
func Ratio(v, base float64) string {
	if base == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v/base)
}

// OnOff renders b as "on" or "off".
func OnOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// CPUModel returns the first "model name" of /proc/cpuinfo, or "unknown CPU".
func CPUModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// UniqueName returns prefix followed by 12 random hex characters.
func UniqueName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// DeleteRedisKeys deletes every key under prefix (prefix + ":*").
func DeleteRedisKeys(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+":*", 1000).Result()
		if err != nil {
			return fmt.Errorf("clean up redis keys %s:*: %w", prefix, err)
		}
		if len(keys) > 0 {
			if err := rdb.Del(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("clean up redis keys %s:*: %w", prefix, err)
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}
