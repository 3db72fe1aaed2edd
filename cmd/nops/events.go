package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// The event bus commands: `nops events replay|stats|consumers`, over POST /v1/events/replay,
// GET /v1/events/stats and GET /v1/events/consumers.

const (
	// maxReplayWindow is the longest window one POST /v1/events/replay accepts; the command
	// splits a longer one.
	maxReplayWindow = 7 * 24 * time.Hour
	maxReplayLimit  = 10000
)

// replayResultDoc is an EventReplayResult (api/kernel.yaml).
type replayResultDoc struct {
	DryRun          bool       `json:"dry_run"`
	Matched         int        `json:"matched"`
	Redelivered     int        `json:"redelivered"`
	Truncated       bool       `json:"truncated"`
	NextFrom        *time.Time `json:"next_from"`
	OldestAvailable *time.Time `json:"oldest_available"`
}

// replaySummary is the command's JSON output: the sums over its calls.
type replaySummary struct {
	DryRun          bool       `json:"dry_run"`
	Consumer        string     `json:"consumer"`
	From            time.Time  `json:"from"`
	To              time.Time  `json:"to"`
	Calls           int        `json:"calls"`
	Matched         int        `json:"matched"`
	Redelivered     int        `json:"redelivered"`
	OldestAvailable *time.Time `json:"oldest_available,omitempty"`
}

func (c *cli) eventsCmd() *cobra.Command {
	var f clientFlags
	e := &cobra.Command{
		Use:   "events",
		Short: "Replay events and read event statistics of a running kernel",
		Long: "A tenant's credential acts on its tenant's events; SUPER_ADMIN on every tenant's, or one\n" +
			"with --tenant.",
	}
	f.bind(e.PersistentFlags(), true, true)

	var (
		from, to, consumer string
		subject            string
		types              []string
		dryRun             bool
		limit              int
	)
	replay := &cobra.Command{
		Use:   "replay --from TIME --to TIME --consumer NAME [--subject PATTERN] [--type TYPE...] [--dry-run]",
		Short: "Deliver the events of a time window again to one consumer",
		Long: "Reads the event stream between --from (inclusive) and --to (exclusive) and delivers each\n" +
			"event again to --consumer (one of `nops events consumers`), calling the kernel as often as\n" +
			"needed: --limit events per call, 7 days of window per call at most. Times are RFC 3339, or a\n" +
			"duration ago (24h). Only what the stream still holds (bus.retention) can be replayed. The\n" +
			"consumers apply an event once, so a replay only changes what they missed. Needs events:write.",
		Example: "  nops events replay --from 24h --to 0s --consumer event-stats --dry-run\n" +
			"  nops events replay --from 2026-03-01T00:00:00Z --to 2026-03-02T00:00:00Z --consumer event-stats --type nops.agent.registered.v1",
		Args: cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			now := time.Now()
			fromS, err := timeFlag("--from", from, now)
			if err != nil {
				return err
			}
			toS, err := timeFlag("--to", to, now)
			if err != nil {
				return err
			}
			start, _ := time.Parse(time.RFC3339Nano, fromS)
			end, _ := time.Parse(time.RFC3339Nano, toS)
			switch {
			case !start.Before(end):
				return fmt.Errorf("--to (%s) must be after --from (%s)", toS, fromS)
			case limit < 1 || limit > maxReplayLimit:
				return fmt.Errorf("--limit: must be between 1 and %d, got %d", maxReplayLimit, limit)
			}
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			sum := replaySummary{DryRun: dryRun, Consumer: consumer, From: start, To: end}
			bar := newProgress(cmd.ErrOrStderr(), "replaying")
			defer bar.finish()
			window := end.Sub(start)
			for cur := start; cur.Before(end); {
				stop := cur.Add(maxReplayWindow)
				if stop.After(end) {
					stop = end
				}
				body := map[string]any{"from": cur.Format(time.RFC3339Nano), "to": stop.Format(time.RFC3339Nano),
					"consumer": consumer, "dry_run": dryRun, "limit": limit}
				if types = splitList(types); len(types) > 0 {
					body["types"] = types
				}
				if subject != "" {
					body["subject"] = subject
				}
				var r replayResultDoc
				if _, err := api.sendJSON(ctx, http.MethodPost, "/v1/events/replay", q, body, nil, &r); err != nil {
					return err
				}
				sum.Calls++
				sum.Matched += r.Matched
				sum.Redelivered += r.Redelivered
				if r.OldestAvailable != nil {
					sum.OldestAvailable = r.OldestAvailable
				}
				next := stop
				if r.Truncated {
					if r.NextFrom == nil || !r.NextFrom.After(cur) {
						return fmt.Errorf("no progress at %s: more than --limit (%d) events share that instant; raise --limit", cur.Format(time.RFC3339Nano), limit)
					}
					next = *r.NextFrom
				}
				cur = next
				bar.update(int64(cur.Sub(start)/time.Second), int64(window/time.Second),
					fmt.Sprintf("replayed up to %s: %d events matched, %d redelivered", cur.UTC().Format(time.RFC3339), sum.Matched, sum.Redelivered))
			}
			bar.finish()
			out := cmd.OutOrStdout()
			if api.json() {
				raw, err := json.Marshal(sum)
				if err != nil {
					return fmt.Errorf("encode result: %w", err)
				}
				return printJSON(out, raw)
			}
			verb, n := "redelivered", sum.Redelivered
			if dryRun {
				verb, n = "dry run: would redeliver", sum.Matched
			}
			fmt.Fprintf(out, "%s %d events to %s (%d matched between %s and %s, %d calls)\n", verb, n,
				clean(consumer), sum.Matched, start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), sum.Calls)
			if sum.OldestAvailable != nil && sum.OldestAvailable.After(start) {
				fmt.Fprintf(out, "note: the stream holds events since %s only; older ones are gone (bus.retention)\n", sum.OldestAvailable.UTC().Format(time.RFC3339))
			}
			return nil
		}),
	}
	rf := replay.Flags()
	rf.StringVar(&from, "from", "", "start of the window, inclusive: RFC 3339 or a duration ago (24h)")
	rf.StringVar(&to, "to", "", "end of the window, exclusive: RFC 3339 or a duration ago (0s: now)")
	rf.StringVar(&consumer, "consumer", "", "the consumer to deliver the events to (see `nops events consumers`)")
	rf.StringVar(&subject, "subject", "", "only events whose subject after '<ns>.events.' matches this NATS-style pattern: <tenant>.<type>, '*' one token, final '>' the rest (e.g. '*.nops.agent.>')")
	rf.StringSliceVar(&types, "type", nil, "only events of these types (repeated or comma-separated)")
	rf.BoolVar(&dryRun, "dry-run", false, "count the events; deliver nothing")
	rf.IntVar(&limit, "limit", 1000, fmt.Sprintf("events per call to the kernel (1-%d)", maxReplayLimit))
	for _, name := range []string{"from", "to", "consumer"} {
		_ = replay.MarkFlagRequired(name)
	}

	stats := &cobra.Command{
		Use:   "stats",
		Short: "Count the events of each type, per tenant, and show when the last one was",
		Long:  "Counted by the kernel's event-stats consumer, once per event. Needs events:read.",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			q, err := api.tenantQuery(ctx)
			if err != nil {
				return err
			}
			var st struct {
				Items []struct {
					Tenant      string    `json:"tenant"`
					Type        string    `json:"type"`
					Count       int64     `json:"count"`
					LastEventAt time.Time `json:"last_event_at"`
				} `json:"items"`
			}
			raw, err := api.getJSON(ctx, "/v1/events/stats", q, &st)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			rows := make([][]string, 0, len(st.Items))
			for _, s := range st.Items {
				rows = append(rows, []string{s.Tenant, s.Type, strconv.FormatInt(s.Count, 10), s.LastEventAt.UTC().Format(time.RFC3339)})
			}
			return table(cmd.OutOrStdout(), []string{"TENANT", "TYPE", "COUNT", "LAST EVENT"}, rows)
		}),
	}

	consumers := &cobra.Command{
		Use:   "consumers",
		Short: "List the kernel's event consumers with their backlog, and the size of the DLQ (SUPER_ADMIN)",
		Args:  cobra.NoArgs,
		RunE: c.remote(&f, func(ctx context.Context, cmd *cobra.Command, api *apiClient, _ []string) error {
			if api.tenantRef != "" {
				return errors.New("--tenant: the consumers are the kernel's, not a tenant's")
			}
			var cs struct {
				Items []struct {
					Name       string `json:"name"`
					Created    bool   `json:"created"`
					Pending    int64  `json:"pending"`
					AckPending int64  `json:"ack_pending"`
				} `json:"items"`
				DeadLetters int64 `json:"dead_letters"`
			}
			raw, err := api.getJSON(ctx, "/v1/events/consumers", nil, &cs)
			if err != nil {
				return err
			}
			if api.json() {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			rows := make([][]string, 0, len(cs.Items))
			for _, it := range cs.Items {
				state := "active"
				if !it.Created {
					state = "not created"
				}
				rows = append(rows, []string{it.Name, state, strconv.FormatInt(it.Pending, 10), strconv.FormatInt(it.AckPending, 10)})
			}
			out := cmd.OutOrStdout()
			if err := table(out, []string{"NAME", "STATE", "PENDING", "ACK PENDING"}, rows); err != nil {
				return err
			}
			_, err = fmt.Fprintf(out, "\ndead letters: %d\n", cs.DeadLetters)
			return err
		}),
	}

	e.AddCommand(replay, stats, consumers)
	return e
}
