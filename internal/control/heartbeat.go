package control

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
)

// Group commit of heartbeats.
//
// Heartbeats are the kernel's hottest write. Committed one per transaction, each pays a durable
// commit (an fsync on SQLite's single writer), which caps throughput at one commit time per
// heartbeat (docs/benchmarks.md). With Options.HeartbeatBatch set, Heartbeat queues the request
// and RunHeartbeats' workers apply whatever has queued — up to HeartbeatBatch — in ONE
// transaction, then answer every caller after that commit. Durability is unchanged: no caller
// hears "ok" before its heartbeat is committed. A heartbeat that fails on its own terms (unknown
// agent, invalid figures) gets its own error without failing the batch; a failure of the
// transaction itself fails every heartbeat in it, and none of them took effect.

type heartbeatReq struct {
	ctx      context.Context
	tenantID string
	id       string
	in       registry.HeartbeatInput
	done     chan heartbeatResp // buffered: a worker never blocks on a caller that left
}

type heartbeatResp struct {
	res registry.HeartbeatResult
	err error
}

// Heartbeat records an agent's heartbeat with its agent.heartbeat event (see heartbeatIn), in its
// own transaction or, with group commit on, in a transaction shared with other queued heartbeats.
func (c *Control) Heartbeat(ctx context.Context, tenantID, id string, in registry.HeartbeatInput) (registry.HeartbeatResult, error) {
	if c.beats == nil {
		var (
			res      registry.HeartbeatResult
			appended bool
		)
		err := c.store.InTx(ctx, func(ctx context.Context) error {
			var err error
			if res, appended, err = c.heartbeatIn(ctx, tenantID, id, in); err != nil || !appended {
				return err
			}
			return c.auditHeartbeat(ctx, res)
		})
		if err == nil {
			c.opts.Enqueued()
			if appended {
				c.notifyTree(ctx, tenantID)
				c.opts.OnStatusChange(tenantID, id, res.Current)
			}
		}
		return res, err
	}
	if err := in.Validate(); err != nil {
		return registry.HeartbeatResult{}, err // refuse bad input before it takes a queue slot
	}
	req := heartbeatReq{ctx: ctx, tenantID: tenantID, id: id, in: in, done: make(chan heartbeatResp, 1)}
	select {
	case c.beats <- req:
	case <-ctx.Done():
		return registry.HeartbeatResult{}, ctx.Err()
	}
	select {
	case r := <-req.done:
		return r.res, r.err
	case <-ctx.Done():
		// The heartbeat may still be applied; the caller gave up waiting for the answer.
		return registry.HeartbeatResult{}, ctx.Err()
	}
}

// RunHeartbeats applies queued heartbeats with workers goroutines until ctx ends, then answers
// what is still queued with ctx's error. It returns nil; it is a no-op without group commit.
func (c *Control) RunHeartbeats(ctx context.Context, workers int) error {
	if c.beats == nil {
		return nil
	}
	done := make(chan struct{})
	for range max(workers, 1) {
		go func() {
			defer func() { done <- struct{}{} }()
			for ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case first := <-c.beats:
					c.applyBatch(ctx, c.drain(first))
				}
			}
		}()
	}
	for range max(workers, 1) {
		<-done
	}
	for {
		select {
		case r := <-c.beats:
			r.done <- heartbeatResp{err: errs.Wrap(errs.Unavailable, ctx.Err(), "the kernel is shutting down")}
		default:
			return nil
		}
	}
}

// drain takes first and whatever else is queued, up to the batch size, without waiting.
func (c *Control) drain(first heartbeatReq) []heartbeatReq {
	batch := []heartbeatReq{first}
	for len(batch) < c.opts.HeartbeatBatch {
		select {
		case r := <-c.beats:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// ownFault reports whether a heartbeat's error is its own (it leaves the transaction usable and
// the rest of the batch unaffected) rather than the store's.
func ownFault(err error) bool {
	switch errs.CodeOf(err) {
	case errs.NotFound, errs.Invalid:
		return true
	}
	return false
}

// batchAttempts bounds how often a batch whose transaction failed is tried again. Several
// writers (and the status sweeper) lock agent rows; a database that breaks a lock cycle aborts
// one of the transactions, and trying that batch again is the remedy.
const batchAttempts = 3

// applyBatch applies a batch in one transaction and answers every request in it. Rows are
// locked in one order — the batch is sorted by (tenant, agent) — and the audit records of status
// changes are appended after every row write, so two batches never wait on each other in a cycle.
func (c *Control) applyBatch(ctx context.Context, batch []heartbeatReq) {
	slices.SortFunc(batch, func(a, b heartbeatReq) int {
		return cmp.Or(strings.Compare(a.tenantID, b.tenantID), strings.Compare(a.id, b.id))
	})
	var (
		resps []heartbeatResp
		trees []string
		// the heartbeats of the batch that changed their agent's status
		statusChanges []registry.HeartbeatResult
		err           error
	)
	for range batchAttempts {
		resps, trees, statusChanges = make([]heartbeatResp, len(batch)), nil, nil
		err = c.store.InTx(context.WithoutCancel(ctx), func(tx context.Context) error {
			var changed []int
			for i, r := range batch {
				if err := r.ctx.Err(); err != nil {
					resps[i].err = err // the caller left before its turn: skip it
					continue
				}
				res, statusChanged, err := c.heartbeatIn(withValuesOf(tx, r.ctx), r.tenantID, r.id, r.in)
				if err != nil {
					if !ownFault(err) {
						return err
					}
					resps[i].err = err
					continue
				}
				resps[i].res = res
				if statusChanged {
					changed = append(changed, i)
				}
			}
			for _, i := range changed { // last: the audit tree locks come after every row lock
				if err := c.auditHeartbeat(withValuesOf(tx, batch[i].ctx), resps[i].res); err != nil {
					return err
				}
				trees = append(trees, batch[i].tenantID)
				statusChanges = append(statusChanges, resps[i].res)
			}
			return nil
		})
		if err == nil || ctx.Err() != nil {
			break
		}
		c.opts.Logger.WarnContext(ctx, "heartbeat batch failed; trying again", "size", len(batch), "error", err)
	}
	for i, r := range batch {
		if err != nil && resps[i].err == nil {
			resps[i] = heartbeatResp{err: err}
		}
		r.done <- resps[i]
	}
	if err == nil {
		c.opts.Enqueued()
		for _, t := range slices.Compact(trees) {
			c.notifyTree(ctx, t)
		}
		for _, res := range statusChanges {
			c.opts.OnStatusChange(res.TenantID, res.AgentID, res.Current)
		}
	}
}

// valuesOf is the transaction's context (its deadline, cancellation and the store's transaction)
// with the values of one request added behind it (principal, request info, trace span), so the
// events and audit records of a batched heartbeat name its own caller.
type valuesOf struct {
	context.Context
	req context.Context
}

func withValuesOf(tx, req context.Context) context.Context { return valuesOf{Context: tx, req: req} }

func (v valuesOf) Value(key any) any {
	if x := v.Context.Value(key); x != nil {
		return x
	}
	return v.req.Value(key)
}
