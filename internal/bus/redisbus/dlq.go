package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// dlqPage is how many DLQ entries one XRANGE reads while a listing filters them.
const dlqPage = 200

// AddDeadLetter stores dl on its tenant's DLQ stream, once per ID and Source within the dedup
// window (one script: marker check, XADD, tenant set, marker).
func (b *Bus) AddDeadLetter(ctx context.Context, dl bus.DeadLetter) error {
	switch {
	case dl.ID == "":
		return errs.Field("id", "must not be empty")
	case !bus.ValidToken(dl.Message.Tenant):
		return errs.Field("tenant", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	}
	tenant := dl.Message.Tenant
	args := []any{b.cfg.DedupWindow.Milliseconds(), tenant}
	args = append(args, encodeDeadLetter(dl)...)
	err := b.runScript(ctx, dlqAddScript,
		[]string{b.keys.dlqDedup(dl.ID, dl.Source), b.keys.dlq(tenant), b.keys.dlqTenants()}, args...).Err()
	if err != nil {
		return unavailable("add dead letter "+dl.ID, err)
	}
	return nil
}

func encodeDeadLetter(dl bus.DeadLetter) []any {
	return []any{
		"dlid", dl.ID,
		"id", dl.Message.ID,
		"tenant", dl.Message.Tenant,
		"type", dl.Message.Type,
		"tp", dl.Message.TraceParent,
		"data", dl.Message.Payload,
		"consumer", dl.Consumer,
		"reason", dl.Reason,
		"attempts", dl.Attempts,
		"stored", formatTime(dl.StoredAt),
		"failed", formatTime(dl.FailedAt),
		"source", dl.Source,
	}
}

func decodeDeadLetter(tenant string, m redis.XMessage) (bus.DeadLetter, error) {
	f := valuesOf(m.Values)
	attempts, err := strconv.Atoi(f["attempts"])
	if err != nil {
		return bus.DeadLetter{}, fmt.Errorf("attempts %q: %w", f["attempts"], err)
	}
	stored, err := parseTime(f["stored"])
	if err != nil {
		return bus.DeadLetter{}, fmt.Errorf("stored: %w", err)
	}
	failed, err := parseTime(f["failed"])
	if err != nil {
		return bus.DeadLetter{}, fmt.Errorf("failed: %w", err)
	}
	return bus.DeadLetter{
		ID: f["dlid"],
		Message: bus.Message{
			ID: f["id"], Tenant: f["tenant"], Type: f["type"], TraceParent: f["tp"], Payload: []byte(f["data"]),
		},
		Consumer: f["consumer"],
		Reason:   f["reason"],
		Attempts: attempts,
		StoredAt: stored,
		FailedAt: failed,
		Source:   f["source"],
		Position: tenant + "/" + m.ID,
	}, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t.UTC(), err
}

// dlqPosition is a dead letter's position and a listing cursor: "<tenant>/<entry id>".
type dlqPosition struct{ tenant, id string }

func parseDLQPosition(s string) (dlqPosition, bool) {
	tenant, id, ok := strings.Cut(s, "/")
	if !ok || !bus.ValidToken(tenant) || !validEntryID(id) {
		return dlqPosition{}, false
	}
	return dlqPosition{tenant, id}, true
}

// ListDeadLetters reads the tenant's DLQ stream (or every tenant's, in tenant order) after the
// cursor, oldest first, keeping the dead letters f matches.
func (b *Bus) ListDeadLetters(ctx context.Context, f bus.DLQFilter, after string, limit int) ([]bus.DeadLetter, string, error) {
	if limit < 1 {
		return nil, "", errs.Field("limit", "must be at least 1")
	}
	if f.Tenant != "" && !bus.ValidToken(f.Tenant) {
		return nil, "", errs.Field("tenant", "is not a tenant id")
	}
	var cur dlqPosition
	if after != "" {
		var ok bool
		if cur, ok = parseDLQPosition(after); !ok || (f.Tenant != "" && cur.tenant != f.Tenant) {
			return nil, "", errs.Field("cursor", "is not a cursor of this listing")
		}
	}
	tenants := []string{f.Tenant}
	if f.Tenant == "" {
		var err error
		if tenants, err = b.rdb.SMembers(ctx, b.keys.dlqTenants()).Result(); err != nil {
			return nil, "", unavailable("list dead letter tenants", err)
		}
		slices.Sort(tenants)
	}
	var out []bus.DeadLetter
	for ti, tenant := range tenants {
		if tenant < cur.tenant {
			continue
		}
		start := "-"
		if tenant == cur.tenant {
			start = "(" + cur.id
		}
		key := b.keys.dlq(tenant)
		for {
			page, err := b.rdb.XRangeN(ctx, key, start, "+", dlqPage).Result()
			if err != nil {
				return nil, "", unavailable("list dead letters", err)
			}
			for i, m := range page {
				start = "(" + m.ID
				dl, err := decodeDeadLetter(tenant, m)
				if err != nil {
					b.logger.Warn("skipping a malformed dead letter", "tenant", tenant, "entry", m.ID, "error", err.Error())
					continue
				}
				if !f.Match(dl) {
					continue
				}
				out = append(out, dl)
				if len(out) == limit {
					more := i < len(page)-1 || len(page) == dlqPage || ti < len(tenants)-1
					if !more {
						return out, "", nil
					}
					return out, dl.Position, nil
				}
			}
			if len(page) < dlqPage {
				break
			}
		}
	}
	return out, "", nil
}

// RemoveDeadLetters deletes dead letters by Position; unknown ones are ignored.
func (b *Bus) RemoveDeadLetters(ctx context.Context, dls []bus.DeadLetter) error {
	byTenant := map[string][]any{}
	for _, dl := range dls {
		p, ok := parseDLQPosition(dl.Position)
		if !ok {
			return errs.Field("position", fmt.Sprintf("%q is not a dead letter position", dl.Position))
		}
		byTenant[p.tenant] = append(byTenant[p.tenant], p.id)
	}
	if len(byTenant) == 0 {
		return nil
	}
	cmds, err := b.pipeline(ctx, func(p redis.Pipeliner) {
		for tenant, ids := range byTenant {
			dlqRemoveScript.EvalSha(ctx, p, []string{b.keys.dlq(tenant), b.keys.dlqTenants()}, append([]any{tenant}, ids...)...)
		}
	})
	if err != nil {
		for _, c := range cmds {
			if c.Err() != nil {
				err = c.Err()
				break
			}
		}
		return unavailable("remove dead letters", err)
	}
	return nil
}

// CountDeadLetters counts the dead letters of tenant, or of every tenant when tenant is "".
func (b *Bus) CountDeadLetters(ctx context.Context, tenant string) (int64, error) {
	if tenant != "" {
		if !bus.ValidToken(tenant) {
			return 0, errs.Field("tenant", "is not a tenant id")
		}
		n, err := b.rdb.XLen(ctx, b.keys.dlq(tenant)).Result()
		if err != nil {
			return 0, unavailable("count dead letters", err)
		}
		return n, nil
	}
	tenants, err := b.rdb.SMembers(ctx, b.keys.dlqTenants()).Result()
	if err != nil {
		return 0, unavailable("list dead letter tenants", err)
	}
	if len(tenants) == 0 {
		return 0, nil
	}
	lens := make([]*redis.IntCmd, len(tenants))
	_, err = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range tenants {
			lens[i] = p.XLen(ctx, b.keys.dlq(t))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, unavailable("count dead letters", err)
	}
	var total int64
	for _, c := range lens {
		total += c.Val()
	}
	return total, nil
}
