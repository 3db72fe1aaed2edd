package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The kernel's histograms that time the stages of a request (their means over a phase's
// measured window, from /metrics scraped at its start and end).
const (
	seriesRequest     = `http_server_request_duration_seconds|http_route="/v1/agents/{agent_id}"`
	seriesNonceClaim  = `nops_reqsig_nonce_claim_duration_seconds|`
	seriesLimitIP     = `nops_ratelimit_check_duration_seconds|stage="ip"`
	seriesLimitCaller = `nops_ratelimit_check_duration_seconds|stage="principal"`
)

// window is what a phase's measured window cost: the process's CPU time (kernel and client
// together: they share the process) and the kernel's stage histograms.
type window struct {
	cpu    time.Duration
	stages map[string]stat // by series, as above
}

// stat is the sum and count of a histogram over a window.
type stat struct{ sum, count float64 }

func (s stat) mean() time.Duration {
	if s.count == 0 {
		return 0
	}
	return time.Duration(s.sum / s.count * float64(time.Second))
}

// snapshot is a point of the measured window.
type snapshot struct {
	cpu   time.Duration
	hists map[string]stat
}

// takeSnapshot reads the process's CPU time and, when metricsURL is set, the stage histograms.
func takeSnapshot(ctx context.Context, metricsURL string) snapshot {
	s := snapshot{cpu: processCPU()}
	if metricsURL != "" {
		s.hists, _ = scrape(ctx, metricsURL) // a failed scrape leaves the stages out
	}
	return s
}

// between is the window from a to b.
func between(a, b snapshot) window {
	w := window{cpu: b.cpu - a.cpu, stages: map[string]stat{}}
	for _, series := range []string{seriesRequest, seriesNonceClaim, seriesLimitIP, seriesLimitCaller} {
		sa, sb := a.hists[series], b.hists[series]
		if d := (stat{sum: sb.sum - sa.sum, count: sb.count - sa.count}); d.count > 0 {
			w.stages[series] = d
		}
	}
	return w
}

// processCPU is the user and system CPU time of the process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scrape reads the Prometheus text of url and sums, per series of the constants above (metric
// name | label the series must carry), the _sum and _count lines of the histograms.
func scrape(ctx context.Context, url string) (map[string]stat, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	out := map[string]stat{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name, labels, _ := strings.Cut(line[:sp], "{")
		for _, series := range []string{seriesRequest, seriesNonceClaim, seriesLimitIP, seriesLimitCaller} {
			metric, label, _ := strings.Cut(series, "|")
			if label != "" && !strings.Contains(labels, label) {
				continue
			}
			s := out[series]
			switch name {
			case metric + "_sum":
				s.sum += v
			case metric + "_count":
				s.count += v
			default:
				continue
			}
			out[series] = s
		}
	}
	return out, sc.Err()
}
