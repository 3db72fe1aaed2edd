package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// The dead-letter queue commands: `nops dlq list` and `nops dlq reprocess`, over GET /v1/dlq and
// POST /v1/dlq/reprocess.

// API limits of POST /v1/dlq/reprocess (api/kernel.yaml).
const (
	maxReprocessIDs   = 1000
	maxReprocessBatch = 5000
	maxReprocessRate  = 5000
	// maxReprocessCalls stops a reprocessing that keeps finding new dead letters (events failing
	// faster than they are reprocessed) instead of looping forever.
	maxReprocessCalls = 10000
)

// deadLetterDoc is what the table shows of a DeadLetter (api/kernel.yaml).
type deadLetterDoc struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Consumer  string    `json:"consumer"`
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	Reason    string    `json:"reason"`
	Attempts  int       `json:"attempts"`
	FailedAt  time.Time `json:"failed_at"`
}

// reprocessDoc is a DLQReprocessResult; the command's JSON output adds the number of calls.
type reprocessDoc struct {
	DryRun      bool     `json:"dry_run"`
	Calls       int      `json:"calls,omitempty"`
	Matched     int      `json:"matched"`
	Reprocessed int      `json:"reprocessed"`
	Remaining   int64    `json:"remaining"`
	IDs         []string `json:"ids"`
}

// dlqSelector is the filter of GET /v1/dlq and of a reprocessing by filter.
type dlqSelector struct {
	consumer, eventType, since, until string
}

// parse checks the times (RFC 3339, or a duration meaning that long ago) and returns them
// as RFC 3339.
func (s dlqSelector) parse(now time.Time) (consumer, eventType, since, until string, err error) {
	if since, err = timeFlag("--since", s.since, now); err != nil {
		return
	}
	if until, err = timeFlag("--until", s.until, now); err != nil {
		return
	}
	return s.consumer, s.eventType, since, until, nil
}

func (s dlqSelector) empty() bool {
	return s.consumer == "" && s.eventType == "" && s.since == "" && s.until == ""
}

func (s *dlqSelector) bind(cmd *cobra.Command, what string) {
	fs := cmd.Flags()
	fs.StringVar(&s.consumer, "consumer", "", what+" of this consumer")
	fs.StringVar(&s.eventType, "type", "", what+" of events of this type, e.g. nops.agent.registered.v1")
	fs.StringVar(&s.since, "since", "", what+" that failed at or after this time: RFC 3339, or a duration ago such as 24h")
	fs.StringVar(&s.until, "until", "", what+" that failed before this time: RFC 3339, or a duration ago such as 1h")
}

// timeFlag reads a time flag: RFC 3339, or a Go duration meaning that long before now. "" stays "".
func timeFlag(name, v string, now time.Time) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC().Format(time.RFC3339Nano), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d).UTC().Format(time.RFC3339Nano), nil
	}
	return "", fmt.Errorf("%s: want an RFC 3339 time (2026-03-01T12:00:00Z) or a duration ago (90m, 24h), got %q", name, v)
}

func (c *cli) dlqCmd() *cobra.Command {
	var f clientFlags
	d := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect and reprocess the dead-letter queue of a running kernel",
		Long: "Events that a consumer of the kernel gave up on (after bus.max_deliveries attempts, or a\n" +
			"terminal error) wait in the dead-letter queue until they are reprocessed: delivered again to\n" +
			"the consumer that failed them. A tenant's credential sees its tenant's dead letters;\n" +
			"SUPER_ADMIN sees every tenant's, or one with --tenant. Reading needs events:read\n" +
			"(OPERATOR and up), reprocessing events:write (ADMIN and up).",
	}
	f.bind(d.PersistentFlags(), true, true)

	var (
		listSel  dlqSelector
		maxItems int
		pageSize int
	)
	list := &cobra.Command{
		Use:     "list",
		Short:   "List dead letters, oldest first, following every page",
		Example: "  nops dlq list --consumer event-stats --since 24h\n  nops dlq list --type nops.agent.registered.v1 -o json",
		Args:    cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			if maxItems < 0 {
				return fmt.Errorf("--limit: must not be negative, got %d", maxItems)
			}
			consumer, eventType, since, until, err := listSel.parse(time.Now())
			if err != nil {
				return err
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			setIf(q, "consumer", consumer)
			setIf(q, "type", eventType)
			setIf(q, "since", since)
			setIf(q, "until", until)
			items, err := listUpTo(ctx, api, "/v1/dlq", q, pageSize, maxItems)
			if err != nil {
				return err
			}
			if api.json() {
				return printItems(cmd.OutOrStdout(), items)
			}
			dls, err := decodeItems[deadLetterDoc](items)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(dls))
			for _, dl := range dls {
				rows = append(rows, []string{dl.ID, dl.Tenant, dl.Consumer, dl.EventType, dl.EventID,
					strconv.Itoa(dl.Attempts), dl.FailedAt.UTC().Format(time.RFC3339), shorten(dl.Reason, 80)})
			}
			return table(cmd.OutOrStdout(), []string{"ID", "TENANT", "CONSUMER", "TYPE", "EVENT", "ATTEMPTS", "FAILED", "REASON"}, rows)
		}),
	}
	listSel.bind(list, "only dead letters")
	list.Flags().IntVar(&maxItems, "limit", 0, "list at most this many dead letters (0: all)")
	bindPageSize(list, &pageSize)

	var (
		ids       []string
		all       bool
		sel       dlqSelector
		dryRun    bool
		batch     int
		perSecond int
	)
	reprocess := &cobra.Command{
		Use:   "reprocess (--id ID... | --all | --consumer/--type/--since/--until) [--dry-run]",
		Short: "Deliver dead letters again to the consumers that failed them, until none is left",
		Long: "Selects dead letters by id (--id, repeated or comma-separated), by filter (--consumer, --type,\n" +
			"--since, --until) or all of them (--all), and calls the kernel until every selected dead letter\n" +
			"was delivered again and removed from the queue: --batch per call, at most --rate per second.\n" +
			"A consumer that fails an event again puts it back in the queue; the command then stops and\n" +
			"fails, saying how many remain (see `nops dlq list`); so does a dead letter of a consumer the\n" +
			"kernel no longer runs, which is left in the queue. --dry-run only counts and lists what\n" +
			"would be reprocessed. Safe to interrupt and run again: an event is applied once in effect.\n" +
			"Every call is recorded in the audit log (dlq.reprocess, dlq.reprocess.dry_run).",
		Example: "  nops dlq reprocess --consumer event-stats --dry-run\n" +
			"  nops dlq reprocess --id dlq_6b86b273ff34fce19d6b804eff5a3f57 --id dlq_d4735e3a265e16eee03f59718b9b5d03\n" +
			"  nops dlq reprocess --all --rate 500",
		Args: cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			ids = splitList(ids)
			base := map[string]any{"dry_run": dryRun, "limit": batch, "rate": perSecond}
			switch n := countTrue(len(ids) > 0, all, !sel.empty()); {
			case n == 0:
				return errors.New("select the dead letters: --id, --all, or a filter (--consumer, --type, --since, --until)")
			case n > 1:
				return errors.New("--id, --all and the filter flags (--consumer, --type, --since, --until) are exclusive: give one selection")
			case batch < 1 || batch > maxReprocessBatch:
				return fmt.Errorf("--batch: must be between 1 and %d, got %d", maxReprocessBatch, batch)
			case perSecond < 1 || perSecond > maxReprocessRate:
				return fmt.Errorf("--rate: must be between 1 and %d, got %d", maxReprocessRate, perSecond)
			}
			// One selection per request body: ids go by at most maxReprocessIDs.
			var bodies []map[string]any
			switch {
			case len(ids) > 0:
				for start := 0; start < len(ids); start += maxReprocessIDs {
					b := maps.Clone(base)
					b["ids"] = ids[start:min(start+maxReprocessIDs, len(ids))]
					bodies = append(bodies, b)
				}
			case all:
				b := maps.Clone(base)
				b["all"] = true
				bodies = append(bodies, b)
			default:
				consumer, eventType, since, until, err := sel.parse(time.Now())
				if err != nil {
					return err
				}
				filter := map[string]string{}
				for k, v := range map[string]string{"consumer": consumer, "type": eventType, "since": since, "until": until} {
					if v != "" {
						filter[k] = v
					}
				}
				b := maps.Clone(base)
				b["filter"] = filter
				bodies = append(bodies, b)
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			res, err := reprocessAll(ctx, api, q, bodies, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if api.json() {
				raw, err := json.Marshal(res)
				if err != nil {
					return fmt.Errorf("encode result: %w", err)
				}
				if err := printJSON(out, raw); err != nil {
					return err
				}
			} else {
				printReprocess(out, res)
			}
			if !dryRun && res.Remaining > 0 {
				return fmt.Errorf("%d dead letters still match after reprocessing %d: they failed again, arrived meanwhile, or belong to a consumer the kernel no longer runs (see `nops dlq list`)", res.Remaining, res.Reprocessed)
			}
			return nil
		}),
	}
	fs := reprocess.Flags()
	fs.StringSliceVar(&ids, "id", nil, "dead letter ids (dlq_…), repeated or comma-separated")
	fs.BoolVar(&all, "all", false, "every dead letter of the tenant (SUPER_ADMIN without --tenant: of every tenant)")
	sel.bind(reprocess, "dead letters")
	fs.BoolVar(&dryRun, "dry-run", false, "count and list what would be reprocessed; change nothing")
	fs.IntVar(&batch, "batch", 500, fmt.Sprintf("dead letters per call to the kernel (1-%d)", maxReprocessBatch))
	fs.IntVar(&perSecond, "rate", 100, fmt.Sprintf("redeliveries per second at most (1-%d)", maxReprocessRate))

	d.AddCommand(list, reprocess)
	return d
}

// reprocessAll sends each body to POST /v1/dlq/reprocess again and again until its selection is
// empty, nothing new was reprocessed (what is left failed again), or, on a dry run, once.
func reprocessAll(ctx context.Context, api *apiClient, q url.Values, bodies []map[string]any, stderr io.Writer) (reprocessDoc, error) {
	res := reprocessDoc{IDs: []string{}}
	seen := map[string]bool{}
	var bar *progress
	defer func() {
		if bar != nil {
			bar.finish()
		}
	}()
	var total, done int64 // done: what the finished selections left
	for _, body := range bodies {
		res.DryRun = body["dry_run"].(bool)
		var left int64
		for {
			if res.Calls == maxReprocessCalls {
				return res, fmt.Errorf("stopped after %d calls: dead letters keep arriving faster than they are reprocessed", res.Calls)
			}
			var r reprocessDoc
			if _, err := api.sendJSON(ctx, http.MethodPost, "/v1/dlq/reprocess", q, body, nil, &r); err != nil {
				return res, err
			}
			res.Calls++
			fresh := 0
			for _, id := range r.IDs {
				if !seen[id] {
					seen[id] = true
					res.IDs = append(res.IDs, id)
					fresh++
				}
			}
			res.Matched += r.Matched
			res.Reprocessed += r.Reprocessed
			left = r.Remaining
			if res.DryRun {
				break
			}
			if bar == nil {
				bar = newProgress(stderr, "reprocessing")
			}
			// The total grows when a later selection (the next 1000 ids) is counted.
			total = max(total, int64(res.Reprocessed)+done+left)
			bar.update(int64(res.Reprocessed), total, fmt.Sprintf("reprocessed %d, remaining %d", res.Reprocessed, done+left))
			if left == 0 || r.Reprocessed == 0 || fresh == 0 {
				break
			}
		}
		done += left
	}
	res.Remaining = done
	return res, nil
}

func printReprocess(w io.Writer, r reprocessDoc) {
	if r.DryRun {
		fmt.Fprintf(w, "dry run: %d dead letters match; nothing was changed\n", r.Remaining)
		for _, id := range r.IDs {
			fmt.Fprintln(w, clean(id))
		}
		if int64(len(r.IDs)) < r.Remaining {
			fmt.Fprintf(w, "(%d listed; raise --batch to list more)\n", len(r.IDs))
		}
		return
	}
	fmt.Fprintf(w, "reprocessed %d dead letters in %d calls; %d remaining\n", r.Reprocessed, r.Calls, r.Remaining)
}

// listUpTo follows next_cursor like apiClient.listAll, stopping after max items (0: all).
func listUpTo(ctx context.Context, api *apiClient, path string, query url.Values, pageSize, max int) ([]json.RawMessage, error) {
	if max == 0 {
		return api.listAll(ctx, path, query, pageSize, nil)
	}
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	var all []json.RawMessage
	for len(all) < max {
		q.Set("limit", strconv.Itoa(min(pageSize, max-len(all))))
		var p struct {
			Items      []json.RawMessage `json:"items"`
			NextCursor string            `json:"next_cursor"`
		}
		if _, err := api.getJSON(ctx, path, q, &p); err != nil {
			return nil, err
		}
		all = append(all, p.Items...)
		if p.NextCursor == "" || p.NextCursor == q.Get("cursor") {
			break
		}
		q.Set("cursor", p.NextCursor)
	}
	return all[:min(len(all), max)], nil
}

// progress shows how far a long command is: a bar on a terminal, a plain line per step
// otherwise (logs, pipes, tests).
type progress struct {
	bar   *progressbar.ProgressBar // nil: plain lines to w
	w     io.Writer
	shown bool
}

func newProgress(stderr io.Writer, description string) *progress {
	tw := progressWriter(stderr)
	if tw == nil {
		return &progress{w: stderr}
	}
	return &progress{bar: progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(tw),
		progressbar.OptionSetDescription(description),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

// update sets the progress to done of total; line is what a plain log says.
func (p *progress) update(done, total int64, line string) {
	if p.bar == nil {
		fmt.Fprintln(p.w, line)
		return
	}
	if total > 0 && p.bar.GetMax64() != total {
		p.bar.ChangeMax64(total)
	}
	_ = p.bar.Set64(done)
	p.shown = true
}

func (p *progress) finish() {
	if p.bar != nil && p.shown {
		_ = p.bar.Finish()
	}
}

func setIf(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

// splitList trims the items of a repeated or comma-separated flag and drops empty ones.
func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// shorten cuts s to n characters, marking the cut.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
