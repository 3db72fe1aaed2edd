package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// diskStats is the disk's durable-append rate: the physical limit of a power-loss-safe event
// that is not batched with others.
type diskStats struct {
	ops     int
	elapsed time.Duration
	lat     []time.Duration // per append + fdatasync, sorted
}

func (d diskStats) rate() float64 {
	if d.elapsed <= 0 {
		return 0
	}
	return float64(d.ops) / d.elapsed.Seconds()
}

// measureDisk appends 1 KB records to a new file in dir, each followed by fdatasync, for d, one
// writer: what a store that syncs every acknowledged write can do at most. The file grows, so
// every fdatasync also commits the file's new size, as a log append does.
func measureDisk(ctx context.Context, dir string, size int, d time.Duration) (st diskStats, err error) {
	f, err := os.CreateTemp(dir, "nops-bench-fsync-")
	if err != nil {
		return diskStats{}, fmt.Errorf("fsync probe: %w", err)
	}
	defer func() {
		err = errors.Join(err, f.Close(), os.Remove(f.Name()))
	}()
	rec := make([]byte, size)
	for i := range rec {
		rec[i] = byte('a' + i%26)
	}
	st.lat = make([]time.Duration, 0, 4096)
	start := time.Now()
	deadline := start.Add(d)
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(deadline) {
			break
		}
		if _, err := f.Write(rec); err != nil {
			return diskStats{}, fmt.Errorf("fsync probe: write: %w", err)
		}
		if err := fdatasync(f); err != nil {
			return diskStats{}, fmt.Errorf("fsync probe: fdatasync: %w", err)
		}
		st.lat = append(st.lat, time.Since(t0))
	}
	st.elapsed = time.Since(start)
	st.ops = len(st.lat)
	slices.Sort(st.lat)
	return st, ctx.Err()
}
