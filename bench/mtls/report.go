package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
)

// side is the rounds of one side of a group, merged.
type side struct {
	name   string
	n      int
	window time.Duration
	cpu    time.Duration
	lats   []time.Duration
}

func (s side) rate() float64 {
	if s.window == 0 {
		return 0
	}
	return float64(s.n) / s.window.Seconds()
}

func (s side) cpuPer() time.Duration {
	if s.n == 0 {
		return 0
	}
	return s.cpu / time.Duration(s.n)
}

// merge sums the rounds of group's base or measured side.
func merge(rs []result, group string, base bool) side {
	var s side
	for _, r := range rs {
		if r.group != group || r.base != base {
			continue
		}
		s.name = r.side
		s.n += len(r.lats)
		s.window += r.window
		s.cpu += r.cpu
		s.lats = append(s.lats, r.lats...)
	}
	slices.Sort(s.lats)
	return s
}

func report(w io.Writer, o options, rs []result, loadBefore, loadAfter string) {
	fmt.Fprintf(w, "Machine: %s, %d CPUs, %s/%s, %s; load average (1, 5, 15 min) %s at the start, %s at the end.\n",
		benchkit.CPUModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), loadBefore, loadAfter)
	fmt.Fprintf(w, "%d clients on connections (%d on SVIDs), %s measured per phase after %s warm-up, %d A/B rounds.\n\n",
		o.concurrency, o.svidConcurrency, o.duration, o.warmup, o.rounds)
	fmt.Fprintln(w, "| group | phase | ops | errors | ops/s | p50 | p99 | CPU/op | notes |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	var groups []string
	for _, r := range rs {
		if !slices.Contains(groups, r.group) {
			groups = append(groups, r.group)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %.0f | %s | %s | %s | %s |\n", r.group, r.side, len(r.lats), r.errors, r.rate(),
			benchkit.Ms(pct(r.lats, 50)), benchkit.Ms(pct(r.lats, 99)), us(perOp(r.cpu, len(r.lats))), r.note)
	}
	fmt.Fprintln(w, "\nCPU/op: CPU time of the whole process (kernel and clients) over the measured window, per operation.")
	fmt.Fprintln(w, "\nRounds merged:")
	fmt.Fprintln(w, "\n| group | phase | ops | ops/s | p50 | p99 | CPU/op |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, g := range groups {
		for _, base := range []bool{true, false} {
			s := merge(rs, g, base)
			fmt.Fprintf(w, "| %s | %s | %d | %.0f | %s | %s | %s |\n", g, s.name, s.n, s.rate(), benchkit.Ms(pct(s.lats, 50)), benchkit.Ms(pct(s.lats, 99)), us(s.cpuPer()))
		}
	}
	fmt.Fprintln(w, "\nRounds merged; ratios are measured / baseline (throughput: > 1 is faster; latency and CPU: > 1 is costlier):")
	fmt.Fprintln(w, "\n| group | baseline | measured | baseline ops/s | measured ops/s | throughput ratio | per round | p50 ratio | p99 ratio | CPU/op ratio | per round |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, g := range groups {
		a, b := merge(rs, g, true), merge(rs, g, false)
		tput, cpu := roundRatios(rs, g)
		fmt.Fprintf(w, "| %s | %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s |\n", g, a.name, b.name, a.rate(), b.rate(),
			benchkit.Ratio(b.rate(), a.rate()), spread(tput),
			benchkit.Ratio(float64(pct(b.lats, 50)), float64(pct(a.lats, 50))),
			benchkit.Ratio(float64(pct(b.lats, 99)), float64(pct(a.lats, 99))),
			benchkit.Ratio(float64(b.cpuPer()), float64(a.cpuPer())), spread(cpu))
	}
	fmt.Fprintln(w, "\nper round: the lowest and highest ratio of one round (its measured phase over the baseline phase just before it).")
	for _, g := range groups {
		if len(g) < len("kept-alive") || g[:len("kept-alive")] != "kept-alive" {
			continue
		}
		a, b := merge(rs, g, true), merge(rs, g, false)
		if a.rate() == 0 {
			continue
		}
		over := 1 - b.rate()/a.rate()
		verdict := "met"
		if over >= 0.05 {
			verdict = "**not met**"
		}
		fmt.Fprintf(w, "\nGoal, %s: mTLS overhead < 5 %% of plain TLS throughput: %.1f %% (CPU/request %+.1f %%): %s\n",
			g, 100*over, 100*(float64(b.cpuPer())/float64(max(a.cpuPer(), 1))-1), verdict)
	}
	for _, r := range rs {
		if r.errors > 0 {
			fmt.Fprintf(w, "\n%s / %s: %d failed operations, first: %s\n", r.group, r.side, r.errors, r.firstErr)
		}
	}
}

func perOp(cpu time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return cpu / time.Duration(n)
}

func us(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// roundRatios pairs group's i-th baseline phase with its i-th measured phase and returns the
// throughput and CPU/op ratios of each pair.
func roundRatios(rs []result, group string) (tput, cpu []float64) {
	var bases, meas []result
	for _, r := range rs {
		if r.group != group {
			continue
		}
		if r.base {
			bases = append(bases, r)
		} else {
			meas = append(meas, r)
		}
	}
	for i := range min(len(bases), len(meas)) {
		a, b := bases[i], meas[i]
		if a.rate() > 0 {
			tput = append(tput, b.rate()/a.rate())
		}
		if ca, cb := perOp(a.cpu, len(a.lats)), perOp(b.cpu, len(b.lats)); ca > 0 && cb > 0 {
			cpu = append(cpu, float64(cb)/float64(ca))
		}
	}
	return tput, cpu
}

// spread renders the lowest and highest of rs as "0.91–1.08×".
func spread(rs []float64) string {
	if len(rs) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f–%.2f×", slices.Min(rs), slices.Max(rs))
}
