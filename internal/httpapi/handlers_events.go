package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/principal"
)

// The event bus console: the dead-letter queue (list, reprocess), replay of a time window,
// per-tenant event statistics and the consumers' backlog. Tenancy: a tenant-bound caller always
// acts in its own tenant (bus.DLQFilter.Tenant and bus.Filter.Tenants are forced to it); a
// principal above tenants names one with ?tenant= or, without it, acts on every tenant.

// EventBus is what the event endpoints use of the event bus; every bus.Bus implements it.
type EventBus interface {
	ListDeadLetters(ctx context.Context, f bus.DLQFilter, after string, limit int) ([]bus.DeadLetter, string, error)
	RemoveDeadLetters(ctx context.Context, dls []bus.DeadLetter) error
	CountDeadLetters(ctx context.Context, tenant string) (int64, error)
	Redeliver(ctx context.Context, consumer string, m bus.Message, dedupKey string) error
	Replay(ctx context.Context, from, to time.Time, f bus.Filter, fn func(bus.Stored) error) (bus.ReplayResult, error)
	ConsumerStats(ctx context.Context, consumer string) (bus.ConsumerStats, error)
}

var _ EventBus = bus.Bus(nil)

// EventStatsReader reads the event-stats projection (both stores implement it); tenant "" reads
// every tenant's.
type EventStatsReader interface {
	EventStats(ctx context.Context, tenant string) ([]consumers.EventStat, error)
}

// Bounds and defaults of the event endpoints; the contract states the same.
const (
	defaultDLQPage         = 50
	defaultReprocessLimit  = 500
	defaultReprocessRate   = 100
	defaultReplayLimit     = 1000
	maxReplayWindow        = 7 * 24 * time.Hour
	busChunk               = 100     // dead letters read from the bus at once
	firstDLQChunk          = 16      // dead letters of unknown size read at once for a page
	countChunk             = 1000    // dead letters read at once to count a selection
	maxDLQPageBytes        = 8 << 20 // a DLQ page stops growing past this much event payload
	minWorkBudget          = time.Second
	reprocessDedupPrefix   = "reprocess:"
	replayDedupPrefix      = "replay:"
	resourceDLQ            = "dlq"
	resourceEventsPrefix   = "events/"
	errBusUnavailableTitle = "the event bus API is not available in this kernel"
)

// errStopReplay ends a Replay early: the call's limit or time budget is reached.
var errStopReplay = errors.New("replay stopped by the caller")

func (h *handlers) eventBus() (EventBus, error) {
	if h.deps.Bus == nil {
		return nil, errs.New(errs.Unavailable, errBusUnavailableTitle)
	}
	return h.deps.Bus, nil
}

// busScope resolves the tenant whose events a request reads or acts on: the caller's own tenant;
// for a principal above tenants the named tenant (which must exist), or "" for every tenant.
func (h *handlers) busScope(ctx context.Context, named *string) (string, error) {
	p, ok := principal.FromContext(ctx)
	if !ok {
		return "", errs.New(errs.Internal, "no principal on an authenticated route")
	}
	if p.Tenant == "" && (named == nil || *named == "") {
		return "", nil
	}
	return h.tenantFor(ctx, named)
}

// workBudget is how long one reprocess or replay call may redeliver: half of the HTTP write
// timeout, so that the answer still reaches the client; the rest is left for the next call.
func (h *handlers) workBudget() time.Duration {
	return max(h.deps.Config.HTTP.WriteTimeout.D()/2, minWorkBudget)
}

func (h *handlers) ListDeadLetters(ctx context.Context, req gen.ListDeadLettersRequestObject) (gen.ListDeadLettersResponseObject, error) {
	tenantID, err := h.busScope(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	b, err := h.eventBus()
	if err != nil {
		return nil, err
	}
	p := req.Params
	f := bus.DLQFilter{Tenant: tenantID, Consumer: deref(p.Consumer), Type: deref(p.Type), Since: deref(p.Since), Until: deref(p.Until)}
	if err := checkWindow(f.Since, f.Until, "query.until"); err != nil {
		return nil, err
	}
	limit := deref(p.Limit)
	if limit == 0 {
		limit = defaultDLQPage
	}
	cursor := deref(p.Cursor)
	out := gen.ListDeadLetters200JSONResponse{Items: []gen.DeadLetter{}}
	size := 0
	// Read in chunks sized by the events seen so far, so that a page of large events stops near
	// maxDLQPageBytes with a cursor that continues right after it.
	for first := true; len(out.Items) < limit; first = false {
		chunk := firstDLQChunk
		if n := len(out.Items); n > 0 && size > 0 {
			chunk = max(1, (maxDLQPageBytes-size)/(size/n+1))
		}
		page, next, err := b.ListDeadLetters(ctx, f, cursor, min(limit-len(out.Items), busChunk, chunk))
		if err != nil {
			if first && cursor != "" && errs.Is(err, errs.Invalid) {
				return nil, &errs.Error{Code: errs.Invalid, Message: "invalid cursor", Err: err,
					Fields: []errs.FieldError{{Name: "query.cursor", Reason: "not a cursor returned by this API"}}}
			}
			return nil, fmt.Errorf("list dead letters: %w", err)
		}
		for _, dl := range page {
			out.Items = append(out.Items, deadLetterOut(dl))
			size += len(dl.Message.Payload)
		}
		if next == cursor { // no progress: end the list rather than hand out the same cursor again
			cursor = ""
			break
		}
		cursor = next
		if next == "" || size >= maxDLQPageBytes {
			break
		}
	}
	out.NextCursor = optString(cursor)
	return out, nil
}

// checkWindow requires since < until when both are given.
func checkWindow(since, until time.Time, field string) error {
	if !since.IsZero() && !until.IsZero() && !since.Before(until) {
		return errs.Field(field, "must be after since")
	}
	return nil
}

// deadLetterOut renders a dead letter; its event is shown as the JSON object it is, or as base64
// when the consumer dead-lettered bytes that are not one.
func deadLetterOut(dl bus.DeadLetter) gen.DeadLetter {
	out := gen.DeadLetter{
		Id:        dl.ID,
		Tenant:    dl.Message.Tenant,
		Consumer:  dl.Consumer,
		EventId:   dl.Message.ID,
		EventType: dl.Message.Type,
		Reason:    dl.Reason,
		Attempts:  dl.Attempts,
		StoredAt:  dl.StoredAt.UTC(),
		FailedAt:  dl.FailedAt.UTC(),
	}
	if ev, ok := jsonObject(dl.Message.Payload); ok {
		out.Event = &ev
	} else {
		raw := bytes.Clone(dl.Message.Payload)
		out.PayloadBase64 = &raw
	}
	return out
}

// jsonObject decodes b when it is one JSON object, keeping numbers as written.
func jsonObject(b []byte) (map[string]any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return m, true
}

func (h *handlers) ReprocessDeadLetters(ctx context.Context, req gen.ReprocessDeadLettersRequestObject) (gen.ReprocessDeadLettersResponseObject, error) {
	tenantID, err := h.busScope(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	b, err := h.eventBus()
	if err != nil {
		return nil, err
	}
	body := req.Body
	f, selection, err := dlqSelection(body, tenantID)
	if err != nil {
		return nil, err
	}
	dryRun := deref(body.DryRun)
	limit, perSecond := defaultReprocessLimit, defaultReprocessRate
	if body.Limit != nil {
		limit = *body.Limit
	}
	if body.Rate != nil {
		perSecond = *body.Rate
	}
	res, runErr := h.reprocess(ctx, b, f, dryRun, limit, perSecond)

	action := control.ActionDLQReprocess
	if dryRun {
		action = control.ActionDLQReprocessDryRun
	}
	reason := fmt.Sprintf("%s: matched %d, reprocessed %d, remaining %d", selection, res.matched, res.reprocessed, res.remaining)
	if runErr != nil {
		reason = fmt.Sprintf("%s: matched %d, reprocessed %d, then failed", selection, res.matched, res.reprocessed)
	}
	if res.orphans > 0 {
		reason += fmt.Sprintf(", %d left of consumers the kernel does not run", res.orphans)
	}
	// Recorded whatever happened, with what was done; the client going away does not stop it.
	auditErr := h.deps.Control.RecordAction(context.WithoutCancel(ctx), control.Action{
		Tenant: tenantID, Action: action, Resource: resourceDLQ, Reason: reason, IDs: res.ids,
	})
	if runErr != nil {
		return nil, runErr
	}
	if auditErr != nil {
		return nil, auditErr
	}
	return gen.ReprocessDeadLetters200JSONResponse{
		DryRun: dryRun, Matched: res.matched, Reprocessed: res.reprocessed, Remaining: res.remaining, Ids: nonNil(res.ids),
	}, nil
}

// dlqSelection reads which dead letters a reprocess request selects: exactly one of ids, filter
// or all: true. It returns the filter and a description of the selection for the audit trail.
func dlqSelection(body *gen.DLQReprocessRequest, tenantID string) (bus.DLQFilter, string, error) {
	f := bus.DLQFilter{Tenant: tenantID}
	var given []string
	if body.Ids != nil {
		given = append(given, "ids")
	}
	if body.Filter != nil {
		given = append(given, "filter")
	}
	if body.All != nil {
		given = append(given, "all")
	}
	switch {
	case len(given) == 0:
		return f, "", errs.Field("body", "select the dead letters with one of ids, filter or all: true")
	case len(given) > 1:
		e := errs.New(errs.Invalid, "ids, filter and all are exclusive: give one of them")
		for _, name := range given[1:] {
			e.Fields = append(e.Fields, errs.FieldError{Name: "body." + name, Reason: "not allowed with body." + given[0] + ": give one of ids, filter or all"})
		}
		return f, "", e
	}
	switch given[0] {
	case "ids":
		for _, id := range *body.Ids {
			if !slices.Contains(f.IDs, id) {
				f.IDs = append(f.IDs, id)
			}
		}
		return f, fmt.Sprintf("by %d ids", len(f.IDs)), nil
	case "filter":
		s := body.Filter
		f.Consumer, f.Type, f.Since, f.Until = deref(s.Consumer), deref(s.Type), deref(s.Since), deref(s.Until)
		if err := checkWindow(f.Since, f.Until, "body.filter.until"); err != nil {
			return f, "", err
		}
		var parts []string
		if f.Consumer != "" {
			parts = append(parts, "consumer="+f.Consumer)
		}
		if f.Type != "" {
			parts = append(parts, "type="+f.Type)
		}
		if !f.Since.IsZero() {
			parts = append(parts, "since="+f.Since.UTC().Format(time.RFC3339Nano))
		}
		if !f.Until.IsZero() {
			parts = append(parts, "until="+f.Until.UTC().Format(time.RFC3339Nano))
		}
		return f, "by filter " + strings.Join(parts, " "), nil
	}
	if !*body.All {
		return f, "", errs.Field("body.all", "must be true; select with ids or filter otherwise")
	}
	if tenantID == "" {
		return f, "all of every tenant", nil
	}
	return f, "all", nil
}

// reprocessed is what one reprocess call did.
type reprocessed struct {
	matched     int
	reprocessed int
	remaining   int64
	ids         []string
	orphans     int // dead letters of consumers this kernel does not run: left alone
}

// reprocess redelivers up to limit dead letters matching f, oldest first, each to the consumer
// that failed it, paced at perSecond, and removes each once redelivered. The redelivery's dedup
// key is the dead letter's position, so a call repeated after a crash between the redelivery and
// the removal is delivered once by the broker (and once in effect by the consumers' inbox). A
// dead letter failed again during the call comes back with a new position: it is not taken twice
// in one call. The call stops when its time budget is spent, leaving the rest for the next one.
// Dead letters of a consumer the kernel does not run (any more) are left in the DLQ: nothing
// would receive them, and removing them would lose them. They still count in remaining.
func (h *handlers) reprocess(ctx context.Context, b EventBus, f bus.DLQFilter, dryRun bool, limit, perSecond int) (reprocessed, error) {
	var out reprocessed
	budget, cancel := context.WithTimeout(ctx, h.workBudget())
	defer cancel()
	pace := rate.NewLimiter(rate.Limit(perSecond), 1)
	seen := map[string]bool{}
	cursor := ""
	done := false
	for !done && out.matched < limit {
		page, next, err := b.ListDeadLetters(ctx, f, cursor, min(limit-out.matched, busChunk))
		if err != nil {
			return out, fmt.Errorf("list dead letters: %w", err)
		}
		for _, dl := range page {
			if seen[dl.ID] || out.matched == limit {
				continue
			}
			if !slices.Contains(h.deps.Consumers, dl.Consumer) {
				seen[dl.ID] = true
				out.orphans++
				continue
			}
			seen[dl.ID] = true
			out.matched++
			if dryRun {
				out.ids = append(out.ids, dl.ID)
				continue
			}
			if done {
				continue // selected, left for the next call
			}
			if err := pace.Wait(budget); err != nil {
				if ctx.Err() != nil {
					return out, fmt.Errorf("reprocess dead letters: %w", ctx.Err())
				}
				done = true // the time budget is spent
				continue
			}
			if err := b.Redeliver(ctx, dl.Consumer, dl.Message, reprocessDedupPrefix+dl.Position); err != nil {
				return out, fmt.Errorf("redeliver dead letter %s to %s: %w", dl.ID, dl.Consumer, err)
			}
			if err := b.RemoveDeadLetters(ctx, []bus.DeadLetter{dl}); err != nil {
				return out, fmt.Errorf("remove reprocessed dead letter %s: %w", dl.ID, err)
			}
			out.reprocessed++
			out.ids = append(out.ids, dl.ID)
		}
		if next == "" || next == cursor {
			break
		}
		cursor = next
	}
	n, err := countDeadLetters(ctx, b, f)
	if err != nil {
		return out, err
	}
	out.remaining = n
	return out, nil
}

// countDeadLetters counts the dead letters matching f: by the bus's own count when f selects a
// whole tenant (or everything), else by reading them.
func countDeadLetters(ctx context.Context, b EventBus, f bus.DLQFilter) (int64, error) {
	if f.Consumer == "" && f.Type == "" && len(f.IDs) == 0 && f.Since.IsZero() && f.Until.IsZero() {
		n, err := b.CountDeadLetters(ctx, f.Tenant)
		if err != nil {
			return 0, fmt.Errorf("count dead letters: %w", err)
		}
		return n, nil
	}
	var n int64
	cursor := ""
	for {
		page, next, err := b.ListDeadLetters(ctx, f, cursor, countChunk)
		if err != nil {
			return 0, fmt.Errorf("count dead letters: %w", err)
		}
		n += int64(len(page))
		if next == "" || next == cursor {
			return n, nil
		}
		cursor = next
	}
}

func (h *handlers) ReplayEvents(ctx context.Context, req gen.ReplayEventsRequestObject) (gen.ReplayEventsResponseObject, error) {
	tenantID, err := h.busScope(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	b, err := h.eventBus()
	if err != nil {
		return nil, err
	}
	body := req.Body
	from, to := body.From.UTC(), body.To.UTC()
	switch {
	case !from.Before(to):
		return nil, errs.Field("body.to", "must be after from")
	case to.Sub(from) > maxReplayWindow:
		return nil, errs.Field("body.to", "must be at most 7 days (168h) after from")
	case !slices.Contains(h.deps.Consumers, body.Consumer):
		return nil, errs.Field("body.consumer", "not a consumer of this kernel; one of: "+strings.Join(h.consumerNames(), ", "))
	}
	f := bus.Filter{}
	if tenantID != "" {
		f.Tenants = []string{tenantID}
	}
	if body.Types != nil {
		for _, t := range *body.Types {
			if !slices.Contains(f.Types, t) {
				f.Types = append(f.Types, t)
			}
		}
	}
	dryRun := deref(body.DryRun)
	limit := defaultReplayLimit
	if body.Limit != nil {
		limit = *body.Limit
	}

	out := gen.ReplayEvents200JSONResponse{DryRun: dryRun}
	deadline := time.Now().Add(h.workBudget())
	subject := ""
	if body.Subject != nil {
		subject = *body.Subject
		if !bus.ValidSubjectPattern(subject) {
			return nil, errs.Field("body.subject", "must be dot-separated tokens, '*' for one token and a final '>' for the rest")
		}
	}
	res, runErr := b.Replay(ctx, from, to, f, func(m bus.Stored) error {
		if subject != "" && !bus.MatchSubject(subject, m.Tenant, m.Type) {
			return nil
		}
		if out.Matched == limit || time.Now().After(deadline) {
			out.Truncated = true
			out.NextFrom = ptr(m.StoredAt.UTC())
			return errStopReplay
		}
		out.Matched++
		if dryRun {
			return nil
		}
		if err := b.Redeliver(ctx, body.Consumer, m.Message, replayDedupPrefix+body.Consumer+":"+m.Position); err != nil {
			return fmt.Errorf("redeliver event %s to %s: %w", m.ID, body.Consumer, err)
		}
		out.Redelivered++
		return nil
	})
	if errors.Is(runErr, errStopReplay) {
		runErr = nil
	}
	if !res.Oldest.IsZero() {
		out.OldestAvailable = ptr(res.Oldest.UTC())
	}

	action := control.ActionEventsReplay
	if dryRun {
		action = control.ActionEventsReplayDryRun
	}
	// The counts come first: a long list of types is what the record's size limit cuts.
	reason := fmt.Sprintf("matched %d, redelivered %d", out.Matched, out.Redelivered)
	switch {
	case runErr != nil:
		reason += ", then failed"
	case out.Truncated:
		reason += ", truncated at " + out.NextFrom.Format(time.RFC3339Nano)
	}
	reason += fmt.Sprintf("; window %s to %s", from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
	if tenantID == "" {
		reason += " of every tenant"
	}
	if subject != "" {
		reason += "; subject " + subject
	}
	if len(f.Types) > 0 {
		reason += "; types " + strings.Join(f.Types, ",")
	}
	auditErr := h.deps.Control.RecordAction(context.WithoutCancel(ctx), control.Action{
		Tenant: tenantID, Action: action, Resource: resourceEventsPrefix + body.Consumer, Reason: reason,
	})
	if runErr != nil {
		return nil, fmt.Errorf("replay events: %w", runErr)
	}
	if auditErr != nil {
		return nil, auditErr
	}
	return out, nil
}

// consumerNames lists the kernel's consumers, sorted.
func (h *handlers) consumerNames() []string {
	names := slices.Clone(h.deps.Consumers)
	slices.Sort(names)
	return slices.Compact(names)
}

func (h *handlers) GetEventStats(ctx context.Context, req gen.GetEventStatsRequestObject) (gen.GetEventStatsResponseObject, error) {
	tenantID, err := h.busScope(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	if h.deps.EventStats == nil {
		return nil, errs.New(errs.Unavailable, "event statistics are not available in this kernel")
	}
	stats, err := h.deps.EventStats.EventStats(ctx, tenantID)
	if err != nil {
		return nil, fmt.Errorf("event statistics: %w", err)
	}
	out := gen.GetEventStats200JSONResponse{Items: make([]gen.EventStat, 0, len(stats))}
	for _, s := range stats {
		if tenantID != "" && s.Tenant != tenantID {
			continue // never another tenant's, whatever the reader returns
		}
		out.Items = append(out.Items, gen.EventStat{Tenant: s.Tenant, Type: s.Type, Count: s.Count, LastEventAt: s.LastEventAt.UTC()})
	}
	return out, nil
}

// ListConsumers reports the kernel's consumers. Their backlog is the kernel's, across tenants:
// for principals above tenants only, whatever the matrix grants.
func (h *handlers) ListConsumers(ctx context.Context, _ gen.ListConsumersRequestObject) (gen.ListConsumersResponseObject, error) {
	if p, ok := principal.FromContext(ctx); ok && p.Tenant != "" {
		return nil, errs.New(errs.Forbidden, "only a principal above tenants may read the kernel's consumers")
	}
	b, err := h.eventBus()
	if err != nil {
		return nil, err
	}
	out := gen.ListConsumers200JSONResponse{Items: []gen.EventConsumer{}}
	for _, name := range h.consumerNames() {
		st, err := b.ConsumerStats(ctx, name)
		switch {
		case errs.Is(err, errs.NotFound):
			out.Items = append(out.Items, gen.EventConsumer{Name: name})
		case err != nil:
			return nil, fmt.Errorf("stats of consumer %s: %w", name, err)
		default:
			out.Items = append(out.Items, gen.EventConsumer{Name: name, Created: true, Pending: st.Pending, AckPending: st.AckPending})
		}
	}
	n, err := b.CountDeadLetters(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("count dead letters: %w", err)
	}
	out.DeadLetters = n
	return out, nil
}
