package control

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nops-kernel/nops/internal/audit"
)

// Audit actions of the event bus console (DLQ reprocessing, replay). Stable strings: auditors
// filter on them. A dry run is recorded too, under its own action: it shows what an operator
// looked at before acting, and costs one record per call; auditors who only want changes filter
// the .dry_run actions out.
const (
	ActionDLQReprocess       = "dlq.reprocess"
	ActionDLQReprocessDryRun = "dlq.reprocess.dry_run"
	ActionEventsReplay       = "events.replay"
	ActionEventsReplayDryRun = "events.replay.dry_run"
)

// maxActionReason is the audit record's limit on a decision reason (internal/audit), in bytes.
const maxActionReason = 1024

// Action is an operator's action carried out outside the kernel's store — events redelivered on
// the bus — so there is no domain change to commit with its audit record. It is recorded after
// it was carried out, with what it did.
type Action struct {
	Tenant   string   // whose audit tree records it; "" for the global tree (an action on every tenant)
	Action   string   // one of the Action… constants
	Resource string   // "dlq", "events/<consumer>"
	Reason   string   // what was done: the selection and the counts; never event payloads
	IDs      []string // ids acted on, listed after Reason as far as the record's size allows
}

// RecordAction appends the audit record of a, allowed, in its own transaction, with the actor and
// the request (digest of the body, which names every id) from ctx. The reason is cut to the
// record's size limit: ids that do not fit are counted ("… and 12 more"), and the request digest
// still binds the record to the whole request. Callers record even an action that failed part way,
// saying so in Reason, so that what was done is on record.
func (c *Control) RecordAction(ctx context.Context, a Action) error {
	reason := actionReason(a.Reason, a.IDs)
	var appended audit.Record
	err := c.store.InTx(ctx, func(ctx context.Context) error {
		var err error
		appended, err = audit.Append(ctx, c.store, c.record(ctx, a.Tenant, a.Action, a.Resource, true, reason))
		return err
	})
	if err != nil {
		return fmt.Errorf("audit %s: %w", a.Action, err)
	}
	c.opts.Appended(appended.Tree, appended.Seq+1)
	return nil
}

// actionReason renders reason followed by the ids that fit in maxActionReason bytes.
func actionReason(reason string, ids []string) string {
	if reason == "" {
		reason = "allowed"
	}
	if len(ids) == 0 {
		return truncateUTF8(reason, maxActionReason)
	}
	// Keep room for the ids' heading and the count of those left out.
	reason = truncateUTF8(reason, maxActionReason/2)
	var b strings.Builder
	b.WriteString(reason)
	b.WriteString("; ids: ")
	for i, id := range ids {
		sep := ""
		if i > 0 {
			sep = ", "
		}
		rest := len(ids) - i
		more := " … and " + strconv.Itoa(rest) + " more"
		// The id fits if, after it, either it was the last one or a "… and N more" still could.
		tail := 0
		if rest > 1 {
			tail = len(" … and " + strconv.Itoa(rest-1) + " more")
		}
		if b.Len()+len(sep)+len(id)+tail > maxActionReason {
			b.WriteString(more)
			break
		}
		b.WriteString(sep)
		b.WriteString(id)
	}
	return truncateUTF8(b.String(), maxActionReason)
}

// truncateUTF8 cuts s to at most n bytes of valid UTF-8 (the audit record requires it) without
// splitting a character.
func truncateUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	// Only a character cut at the end can be invalid now.
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
