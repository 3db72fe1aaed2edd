package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
)

// overheadRun is one target of the overhead phase.
type overheadRun struct {
	name         string
	open, closed result
	// The kernel's: billing.usage events counted, and when the count last moved after the
	// load (the event backlog's drain time).
	usage   int64
	drained time.Duration
}

// weightsRun is one balancing mode of the weights phase.
type weightsRun struct {
	mode   string
	r      result
	agents map[string]string // agent id → name
	names  []string          // agent names in report order
	split  time.Duration     // when the agent degraded, from the window's start
}

// e2eRun is one load level of the e2e phase.
type e2eRun struct {
	load           string
	direct, kernel result
}

// report collects the phases' results and writes them as markdown.
type report struct {
	o            options
	start        time.Time
	load         string
	nginxVersion string
	nginxSkipped string
	overhead     []overheadRun
	weights      []weightsRun
	e2e          []e2eRun
}

// loadAvg returns /proc/loadavg's first three fields, or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// nginxVersion returns what nginx -v prints, e.g. "nginx/1.22.1".
func nginxVersion(bin string) string {
	out, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil {
		return "nginx (version unknown)"
	}
	_, v, _ := strings.Cut(strings.TrimSpace(string(out)), "version: ")
	return v
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

// signedMs renders d in milliseconds with a sign.
func signedMs(d time.Duration) string {
	return fmt.Sprintf("%+.2f ms", float64(d)/float64(time.Millisecond))
}

// rateNote marks an open loop whose completed rate fell short of the offered one.
func rateNote(r result) string {
	if r.rps() < 0.95*r.rate {
		return " (behind)"
	}
	return ""
}

func (rep *report) write(w io.Writer) {
	fmt.Fprintf(w, "Machine: %s, %d CPUs, %s/%s, %s; run %s, load average at start %s.\n\n",
		benchkit.CPUModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), rep.start.Format(time.RFC3339), rep.load)
	if len(rep.overhead) > 0 || rep.nginxSkipped != "" {
		rep.writeOverhead(w)
	}
	if len(rep.weights) > 0 {
		rep.writeWeights(w)
	}
	if len(rep.e2e) > 0 {
		rep.writeE2E(w)
	}
}

// meanDirect returns the mean p50 and p99 of the open-loop direct runs and their mean closed-loop
// throughput; ok is false without a direct run.
func (rep *report) meanDirect() (p50, p99 time.Duration, rps float64, ok bool) {
	var n int
	for _, r := range rep.overhead {
		if r.name == "direct" {
			p50 += r.open.pct(50)
			p99 += r.open.pct(99)
			rps += r.closed.rps()
			n++
		}
	}
	if n == 0 {
		return 0, 0, 0, false
	}
	return p50 / time.Duration(n), p99 / time.Duration(n), rps / float64(n), true
}

func (rep *report) last(name string) (overheadRun, bool) {
	for i := len(rep.overhead) - 1; i >= 0; i-- {
		if rep.overhead[i].name == name {
			return rep.overhead[i], true
		}
	}
	return overheadRun{}, false
}

func (rep *report) writeOverhead(w io.Writer) {
	o := rep.o
	fmt.Fprintf(w, "### Overhead: one agent answering ~200 bytes at once\n\n")
	if rep.nginxVersion != "" {
		fmt.Fprintf(w, "nginx: %s (proxy_http_version 1.1, upstream keepalive 512, worker_processes auto).\n", rep.nginxVersion)
	}
	if rep.nginxSkipped != "" {
		fmt.Fprintf(w, "nginx phase skipped: %s.\n", rep.nginxSkipped)
	}
	if len(rep.overhead) == 0 {
		fmt.Fprintln(w)
		return
	}
	dp50, dp99, drps, haveDirect := rep.meanDirect()
	fmt.Fprintf(w, "\n(a) Open loop, %.0f req/s offered for %s (latency from the scheduled send time):\n\n", o.rate, o.duration)
	fmt.Fprintln(w, "| target | done/s | errors | p50 | p99 | added p50 | added p99 | generator lag p99 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	seen := map[string]bool{}
	label := func(n string) string {
		if seen[n] {
			return n + " (again)"
		}
		return n
	}
	for _, r := range rep.overhead {
		added50, added99 := "–", "–"
		if haveDirect && r.name != "direct" {
			added50, added99 = signedMs(r.open.pct(50)-dp50), signedMs(r.open.pct(99)-dp99)
		}
		fmt.Fprintf(w, "| %s | %.0f%s | %d | %s | %s | %s | %s | %s |\n", label(r.name), r.open.rps(), rateNote(r.open), r.open.errors,
			benchkit.Ms(r.open.pct(50)), benchkit.Ms(r.open.pct(99)), added50, added99, benchkit.Ms(pct(r.open.lags, 99)))
		seen[r.name] = true
	}
	nginx, haveNginx := rep.last("nginx")
	fmt.Fprintf(w, "\n(b) Closed loop, %d clients for %s (maximum throughput):\n\n", o.concurrency, o.duration)
	fmt.Fprintln(w, "| target | req/s | errors | p50 | p99 | vs direct | vs nginx |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	seen = map[string]bool{}
	for _, r := range rep.overhead {
		vsNginx := 0.0
		if haveNginx {
			vsNginx = nginx.closed.rps()
		}
		fmt.Fprintf(w, "| %s | %.0f | %d | %s | %s | %s | %s |\n", label(r.name), r.closed.rps(), r.closed.errors,
			benchkit.Ms(r.closed.pct(50)), benchkit.Ms(r.closed.pct(99)), benchkit.Ratio(r.closed.rps(), drps), benchkit.Ratio(r.closed.rps(), vsNginx))
		seen[r.name] = true
	}
	kern, haveKernel := rep.last("kernel")
	if haveKernel {
		fmt.Fprintf(w, "\nKernel events: %d billing.usage events counted by the event-stats consumer, the last %s after the load stopped "+
			"(each call's billing.usage and invocation.completed go through the outbox, the relay, the bus and the consumer).\n",
			kern.usage, benchkit.Ms(kern.drained))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| goal (issue 6) | measured | verdict |")
	fmt.Fprintln(w, "|---|---|---|")
	if haveKernel && haveDirect {
		a50, a99 := kern.open.pct(50)-dp50, kern.open.pct(99)-dp99
		fmt.Fprintf(w, "| kernel-added latency at %.0f req/s, p50 ≤ 0.3 ms | %s | %s |\n", o.rate, signedMs(a50), verdict(a50 <= 300*time.Microsecond))
		fmt.Fprintf(w, "| kernel-added latency at %.0f req/s, p99 ≤ 1 ms | %s | %s |\n", o.rate, signedMs(a99), verdict(a99 <= time.Millisecond))
	}
	if haveKernel && haveNginx {
		fmt.Fprintf(w, "| kernel throughput ≥ 50 %% of nginx's | %.0f vs %.0f req/s (%s) | %s |\n", kern.closed.rps(), nginx.closed.rps(),
			benchkit.Ratio(kern.closed.rps(), nginx.closed.rps()), verdict(kern.closed.rps() >= 0.5*nginx.closed.rps()))
	}
	if haveKernel && haveDirect {
		fmt.Fprintf(w, "| (for reading) kernel throughput vs direct | %.0f vs %.0f req/s (%s) | |\n", kern.closed.rps(), drps, benchkit.Ratio(kern.closed.rps(), drps))
	}
	if haveNginx && haveDirect {
		fmt.Fprintf(w, "| (for reading) nginx-added latency p50 / p99 | %s / %s | |\n", signedMs(nginx.open.pct(50)-dp50), signedMs(nginx.open.pct(99)-dp99))
	}
	for _, r := range rep.overhead {
		for _, x := range []result{r.open, r.closed} {
			if x.errors > 0 {
				fmt.Fprintf(w, "\n%s: %d failed requests, first: %s\n", r.name, x.errors, x.firstErr)
			}
		}
	}
	fmt.Fprintln(w)
}

// shares returns the share of samples each named agent answered, before and after split.
func (wr weightsRun) shares() (before, after map[string]float64) {
	before, after = map[string]float64{}, map[string]float64{}
	var nb, na float64
	for _, s := range wr.r.samples {
		name := wr.agents[s.agent]
		if s.at < wr.split {
			before[name]++
			nb++
		} else {
			after[name]++
			na++
		}
	}
	for k := range before {
		before[k] /= nb
	}
	for k := range after {
		after[k] /= na
	}
	return before, after
}

// halfP95 returns the p95 of the samples scheduled before (first) or after the split.
func (wr weightsRun) halfP95(first bool) time.Duration {
	var lats []time.Duration
	for _, s := range wr.r.samples {
		if (s.at < wr.split) == first {
			lats = append(lats, s.lat)
		}
	}
	slices.Sort(lats)
	return pct(lats, 95)
}

func (rep *report) writeWeights(w io.Writer) {
	o := rep.o
	fmt.Fprintf(w, "### Dynamic vs static weights\n\n")
	fmt.Fprintf(w, "Agents with service times 5, 20 and 80 ms, and one of 5 ms that degrades to %s halfway; open loop at %.0f req/s for %s per mode (fresh kernel each).\n\n",
		degradedTo, o.weightsRate, o.weightsDuration)
	fmt.Fprintln(w, "| balancing | done/s | errors | p50 | p95 | p99 | p95 1st half | p95 2nd half | share 1st half (5/20/80/5→200 ms) | share 2nd half |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	var static, dynamic *weightsRun
	for i := range rep.weights {
		wr := &rep.weights[i]
		switch wr.mode {
		case "static":
			static = wr
		case "dynamic":
			dynamic = wr
		}
		before, after := wr.shares()
		fmtShares := func(m map[string]float64) string {
			var parts []string
			for _, n := range wr.names {
				parts = append(parts, fmt.Sprintf("%.0f", 100*m[n]))
			}
			return strings.Join(parts, " / ") + " %"
		}
		fmt.Fprintf(w, "| %s | %.0f%s | %d | %s | %s | %s | %s | %s | %s | %s |\n", wr.mode, wr.r.rps(), rateNote(wr.r), wr.r.errors,
			benchkit.Ms(wr.r.pct(50)), benchkit.Ms(wr.r.pct(95)), benchkit.Ms(wr.r.pct(99)),
			benchkit.Ms(wr.halfP95(true)), benchkit.Ms(wr.halfP95(false)), fmtShares(before), fmtShares(after))
	}
	if static != nil && dynamic != nil && static.r.pct(95) > 0 {
		imp := 1 - float64(dynamic.r.pct(95))/float64(static.r.pct(95))
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| goal (issue 6) | measured | verdict |")
		fmt.Fprintln(w, "|---|---|---|")
		fmt.Fprintf(w, "| p95 improvement of dynamic over static ≥ 30 %% (roadmap ≥ 10 %%) | %.0f %% (%s → %s) | %s (roadmap: %s) |\n",
			100*imp, benchkit.Ms(static.r.pct(95)), benchkit.Ms(dynamic.r.pct(95)), verdict(imp >= 0.30), verdict(imp >= 0.10))
	}
	for _, wr := range rep.weights {
		if wr.r.errors > 0 {
			fmt.Fprintf(w, "\n%s: %d failed requests, first: %s\n", wr.mode, wr.r.errors, wr.r.firstErr)
		}
	}
	fmt.Fprintln(w)
}

func (rep *report) writeE2E(w io.Writer) {
	o := rep.o
	fmt.Fprintf(w, "### End to end: three 5 ms agents\n\n")
	fmt.Fprintf(w, "Open loop for %s per row; direct = the same agents round-robin, no kernel.\n\n", o.duration)
	fmt.Fprintln(w, "| load | path | offered | done/s | errors | p50 | p95 | p99 | kernel-added p95 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, e := range rep.e2e {
		for _, r := range []result{e.direct, e.kernel} {
			added := "–"
			if r.name == "kernel" {
				added = signedMs(e.kernel.pct(95) - e.direct.pct(95))
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %.0f%s | %d | %s | %s | %s | %s |\n", e.load, r.name, r.rate, r.rps(), rateNote(r), r.errors,
				benchkit.Ms(r.pct(50)), benchkit.Ms(r.pct(95)), benchkit.Ms(r.pct(99)), added)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| goal (issue 6) | measured | verdict |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, e := range rep.e2e {
		added := e.kernel.pct(95) - e.direct.pct(95)
		limit := 500 * time.Millisecond
		if e.load == "peak" {
			limit = 900 * time.Millisecond
		}
		fmt.Fprintf(w, "| %s (%.0f req/s): kernel-added p95 < 2 ms | %s | %s |\n", e.load, e.kernel.rate, signedMs(added), verdict(added < 2*time.Millisecond))
		fmt.Fprintf(w, "| %s (%.0f req/s): e2e p95 < %s (roadmap) | %s | %s |\n", e.load, e.kernel.rate, limit, benchkit.Ms(e.kernel.pct(95)), verdict(e.kernel.pct(95) < limit))
	}
	for _, e := range rep.e2e {
		for _, r := range []result{e.direct, e.kernel} {
			if r.errors > 0 {
				fmt.Fprintf(w, "\n%s %s: %d failed requests, first: %s\n", e.load, r.name, r.errors, r.firstErr)
			}
		}
	}
	fmt.Fprintln(w)
}
