package control

import (
	"context"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/flags"
)

// Audit actions of feature flags. Stable strings: auditors filter on them. Flags are global
// kernel objects, so they are recorded in the global audit tree.
const (
	ActionFlagCreate = "flag.create"
	ActionFlagUpdate = "flag.update"
	ActionFlagDelete = "flag.delete"
)

func errNoFlags() error {
	return errs.New(errs.Unavailable, "feature flags are not enabled on this kernel")
}

// flagResource names a flag in audit records.
func flagResource(key string) string { return "flags/" + key }

// PutFlag creates or replaces the flag of key, with its nops.flag.changed.v1 event and audit
// record (flag.create or flag.update; an unchanged flag is audited as "no change" without an
// event) in one transaction. This replica's evaluator reloads after the commit; the others on the
// event.
func (c *Control) PutFlag(ctx context.Context, key string, pre flags.Preconditions, spec flags.Spec) (flags.Change, error) {
	if c.Flags == nil {
		return flags.Change{}, errNoFlags()
	}
	var ch flags.Change
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if ch, err = c.Flags.Put(ctx, key, pre, spec); err != nil {
			return outcome{}, err
		}
		o := outcome{action: ActionFlagUpdate, resource: flagResource(key)}
		change := events.FlagUpdated
		if ch.Created {
			o.action, change = ActionFlagCreate, events.FlagCreated
		}
		if !ch.Changed {
			o.reason = "allowed: no change"
			return o, nil
		}
		o.event = events.FlagChanged{Key: key, Change: change, Revision: ch.After.Revision, ChangedAt: ch.After.UpdatedAt}
		return o, nil
	})
	if err != nil {
		return flags.Change{}, err
	}
	if ch.Changed && c.FlagsChanged != nil {
		c.FlagsChanged(ctx)
	}
	return ch, nil
}

// DeleteFlag deletes the flag of key (evaluations of it then fail with FLAG_NOT_FOUND), with its
// nops.flag.changed.v1 event and audit record; ifMatch may be empty or an ETag.
func (c *Control) DeleteFlag(ctx context.Context, key, ifMatch string) error {
	if c.Flags == nil {
		return errNoFlags()
	}
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		f, err := c.Flags.Delete(ctx, key, ifMatch)
		if err != nil {
			return outcome{}, err
		}
		return outcome{action: ActionFlagDelete, resource: flagResource(key),
			event: events.FlagChanged{Key: key, Change: events.FlagDeleted, Revision: f.Revision, ChangedAt: c.opts.Now().UTC()}}, nil
	})
	if err != nil {
		return err
	}
	if c.FlagsChanged != nil {
		c.FlagsChanged(ctx)
	}
	return nil
}
