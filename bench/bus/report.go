package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
)

// The goals (issue 4, "Benchmarks").
const (
	goalSyncRate    = 2000                  // power-loss-safe, events/s sustained …
	goalSyncP95     = 5 * time.Millisecond  // … at this p95
	goalSyncP99     = 15 * time.Millisecond // … and this p99
	roadmapP95      = 25 * time.Millisecond // the roadmap's looser bound (S3)
	roadmapP99      = 60 * time.Millisecond //
	goalAsyncRate   = 20000                 // crash-safe embedded, events/s sustained
	goalLayerRatio  = 0.70                  // ours ÷ raw throughput
	sustainedMargin = 0.95                  // an open loop is sustained at ≥ 95 % of its rate …
)

// report is the whole run.
type report struct {
	o        options
	machine  string
	services []string
	disk     *diskStats
	results  []result
}

// loadLabel names a load in the report.
func loadLabel(o options, impl, adapter string, rate int) string {
	if rate > 0 {
		return fmt.Sprintf("%s/s", thousands(rate))
	}
	if impl == implRaw && adapter != adRedis {
		return fmt.Sprintf("max: %d publishers, PublishAsync window %d", o.Publishers, o.MaxPending)
	}
	return fmt.Sprintf("max: %d publishers × %d per call", o.Publishers, o.Batch)
}

func (rep report) write(w io.Writer) {
	o := rep.o
	fmt.Fprintln(w, rep.machine)
	for _, s := range rep.services {
		fmt.Fprintln(w, s)
	}
	fmt.Fprintf(w, "Settings: %d-byte events; %s per phase after %s warm-up; open loop at %s; closed loop %v with %d publishers (batches of up to %d per call), at most %d events published and not yet consumed; raw NATS PublishAsync window %d; ours: %d consumer handlers; each phase on a fresh stream/namespace.\n",
		o.PayloadSize, o.Duration, o.Warmup, ratesLabel(o.Rates), benchkit.OnOff(o.Max), o.Publishers, o.Batch, o.MaxBacklog, o.MaxPending, o.ConsumerConcurrency)

	if d := rep.disk; d != nil {
		fmt.Fprintln(w, "\n#### Physical limit: 1 KB appends, each followed by fdatasync, one writer")
		fmt.Fprintln(w, "\n| appends | appends/s | p50 | p99 | max |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---:|")
		fmt.Fprintf(w, "| %d | %.0f | %s | %s | %s |\n", d.ops, d.rate(), benchkit.Ms(pct(d.lat, 0.5)), benchkit.Ms(pct(d.lat, 0.99)), benchkit.Ms(pct(d.lat, 1)))
	}

	fmt.Fprintln(w, "\n#### Publish → consume")
	fmt.Fprintln(w, "\n| adapter | implementation | load | events | events/s | published/s | p50 | p95 | p99 | max | unconsumed / failed / dup | ÷ raw events/s | ÷ raw p50 / p99 |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var maxLag time.Duration
	for _, r := range rep.results {
		label := loadLabel(o, r.impl, r.adapter, r.rate)
		if r.err != nil {
			fmt.Fprintf(w, "| %s | %s | %s | failed: %s | | | | | | | | | |\n", r.adapter, implLabel(r.adapter, r.impl), label, oneLine(r.err))
			continue
		}
		st := r.st
		rate := fmt.Sprintf("%.0f", st.rate())
		if r.rate > 0 && !sustained(r) {
			rate += " (not sustained)"
		}
		rateRatio, latRatio := "", ""
		if base, ok := rep.find(r.adapter, implRaw, r.rate); ok && r.impl != implRaw {
			rateRatio = benchkit.Ratio(st.rate(), base.st.rate())
			latRatio = benchkit.Ratio(float64(pct(st.lat, 0.50)), float64(pct(base.st.lat, 0.50))) + " / " +
				benchkit.Ratio(float64(pct(st.lat, 0.99)), float64(pct(base.st.lat, 0.99)))
		}
		pubRate := ""
		if r.rate == 0 {
			pubRate = fmt.Sprintf("%.0f", st.publishRate())
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %d / %d / %d | %s | %s |\n",
			r.adapter, implLabel(r.adapter, r.impl), label, st.events, rate, pubRate,
			benchkit.Ms(pct(st.lat, 0.50)), benchkit.Ms(pct(st.lat, 0.95)), benchkit.Ms(pct(st.lat, 0.99)), benchkit.Ms(pct(st.lat, 1)),
			unconsumed(st), st.failed, st.dups, rateRatio, latRatio)
		if sustained(r) {
			maxLag = max(maxLag, pct(st.lag, 0.99))
		}
	}
	fmt.Fprintln(w, "\nOpen-loop latency runs from the time an event was due to its consumption; closed-loop (max) latency from the start of its publish call. events/s is the events consumed over the time from the start of the measured run to the last consumption; published/s (closed loop) the events acknowledged over the publishing time; an open loop is sustained when that is at least 95 % of its rate with nothing unconsumed or failed. Unconsumed: acknowledged by the broker but not consumed within the drain time.")
	if maxLag > 0 {
		fmt.Fprintf(w, "Load generator: the worst p99 of its lag (due → handed to the publisher) over the sustained open-loop phases was %s.\n", benchkit.Ms(maxLag))
	}
	rep.writeCPU(w)
	for _, r := range rep.results {
		if r.err == nil && r.st.firstErr != nil {
			fmt.Fprintf(w, "First publish error of %s/%s/%s: %s\n", r.adapter, r.impl, loadLabel(o, r.impl, r.adapter, r.rate), oneLine(r.st.firstErr))
		}
	}
	rep.writeGoals(w)
}

// writeCPU writes the CPU time per event of the closed-loop phases (see cpuCost).
func (rep report) writeCPU(w io.Writer) {
	var rows []string
	for _, r := range rep.results {
		if r.err != nil || r.rate != 0 || !r.cpu.ok || r.cpu.events == 0 {
			continue
		}
		total := r.cpu.perEvent(r.cpu.process + r.cpu.redis)
		redisCol, ratio := "", ""
		if r.adapter == adRedis {
			redisCol = fmt.Sprintf("%.1f", r.cpu.perEvent(r.cpu.redis))
		}
		if base, ok := rep.find(r.adapter, implRaw, 0); ok && r.impl != implRaw && base.cpu.ok && base.cpu.events > 0 {
			ratio = benchkit.Ratio(total, base.cpu.perEvent(base.cpu.process+base.cpu.redis))
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %d | %.1f | %s | %.1f | %s |",
			r.adapter, implLabel(r.adapter, r.impl), r.cpu.events, r.cpu.perEvent(r.cpu.process), redisCol, total, ratio))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nCPU time per event of the closed-loop phases, warm-up and drain included (µs): this process (load generator, client, our layer, the embedded broker) and the Redis server (INFO cpu). On a shared machine events/s follow the CPU other tenants leave; CPU per event much less.")
	fmt.Fprintln(w, "\n| adapter | implementation | events | process µs/event | Redis µs/event | total µs/event | ÷ raw total |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
	for _, row := range rows {
		fmt.Fprintln(w, row)
	}
}

// writeGoals states each of the goals that this run measured as met or not met.
func (rep report) writeGoals(w io.Writer) {
	var rows []string
	add := func(goal, measured string, met bool) {
		verdict := "**not met**"
		if met {
			verdict = "met"
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s |", goal, measured, verdict))
	}
	if r, ok := rep.find(adEmbeddedSync, implOurs, goalSyncRate); ok {
		p95, p99 := pct(r.st.lat, 0.95), pct(r.st.lat, 0.99)
		measured := fmt.Sprintf("%.0f events/s%s, p95 %s, p99 %s", r.st.rate(), sustainedNote(r), benchkit.Ms(p95), benchkit.Ms(p99))
		add(fmt.Sprintf("power-loss-safe (embedded-sync): %s events/s sustained with p95 ≤ %s and p99 ≤ %s", thousands(goalSyncRate), benchkit.Ms(goalSyncP95), benchkit.Ms(goalSyncP99)),
			measured, sustained(r) && p95 <= goalSyncP95 && p99 <= goalSyncP99)
		add(fmt.Sprintf("roadmap (S3): %s events/s with p95 ≤ %s and p99 ≤ %s", thousands(goalSyncRate), benchkit.Ms(roadmapP95), benchkit.Ms(roadmapP99)),
			measured, sustained(r) && p95 <= roadmapP95 && p99 <= roadmapP99)
	}
	if r, ok := rep.find(adEmbeddedSync, implOurs, 0); ok && rep.disk != nil {
		fsync := rep.disk.rate()
		measured := fmt.Sprintf("%.0f events/s against %.0f fdatasync/s (%s)", r.st.rate(), fsync, benchkit.Ratio(r.st.rate(), fsync))
		if a, ok := rep.find(adEmbeddedSync, implAtomic, 0); ok {
			measured += fmt.Sprintf("; raw atomic batches %.0f/s (%s)", a.st.rate(), benchkit.Ratio(a.st.rate(), fsync))
		}
		if a, ok := rep.find(adEmbeddedSync, implRaw, 0); ok {
			measured += fmt.Sprintf("; raw PublishAsync %.0f/s (%s)", a.st.rate(), benchkit.Ratio(a.st.rate(), fsync))
		}
		add("power-loss-safe maximum rate above the disk's fsync rate (batching)", measured, r.st.rate() > fsync)
	}
	if r, ok := rep.find(adEmbeddedAsync, implOurs, 0); ok {
		add(fmt.Sprintf("crash-safe (embedded-async): ≥ %s events/s sustained", thousands(goalAsyncRate)),
			fmt.Sprintf("%.0f events/s", r.st.rate()), r.st.rate() >= goalAsyncRate && unconsumed(r.st) == 0)
	}
	for _, a := range rep.o.Adapters {
		ours, ok1 := rep.find(a, implOurs, 0)
		raw, ok2 := rep.find(a, implRaw, 0)
		if !ok1 || !ok2 || raw.st.rate() == 0 {
			continue
		}
		q := ours.st.rate() / raw.st.rate()
		add(fmt.Sprintf("%s: our layer keeps ≥ %.0f %% of the raw library's maximum throughput", a, goalLayerRatio*100),
			fmt.Sprintf("%.0f vs %.0f events/s (%s)", ours.st.rate(), raw.st.rate(), benchkit.Ratio(ours.st.rate(), raw.st.rate())), q >= goalLayerRatio)
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\n#### Goals (issue 4)")
	fmt.Fprintln(w, "\n| goal | measured | verdict |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, r := range rows {
		fmt.Fprintln(w, r)
	}
}

// find returns the successful result of impl on adapter a under rate.
func (rep report) find(a, impl string, rate int) (result, bool) {
	for _, r := range rep.results {
		if r.adapter == a && r.impl == impl && r.rate == rate && r.err == nil {
			return r, true
		}
	}
	return result{}, false
}

// sustained reports whether an open-loop phase kept up with its rate.
func sustained(r result) bool {
	return r.rate > 0 && r.st.rate() >= sustainedMargin*float64(r.rate) && unconsumed(r.st) == 0 && r.st.failed == 0 && r.st.caughtUp
}

func sustainedNote(r result) string {
	if sustained(r) {
		return ""
	}
	return " (not sustained)"
}

func unconsumed(st phaseStats) int64 { return max(st.acked-st.consumed, 0) }

// thousands formats n with thin separators: 20000 → "20,000".
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func ratesLabel(rates []int) string {
	if len(rates) == 0 {
		return "no fixed rate"
	}
	parts := make([]string, len(rates))
	for i, r := range rates {
		parts[i] = thousands(r)
	}
	return strings.Join(parts, ", ") + " events/s"
}

// oneLine keeps an error's first line, short enough for a table cell, without pipes.
func oneLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
