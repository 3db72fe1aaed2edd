package consumers

import (
	"context"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// TxRunner runs fn in one database transaction: the storage adapters' InTx. Every store method
// called with the ctx fn receives joins the transaction; fn's error rolls it back.
type TxRunner interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// InboxStore is the consumers' inbox: which events each consumer has applied.
type InboxStore interface {
	// ClaimInbox records that consumer applies event eventID at at, in the transaction bound to
	// ctx. It returns true when the claim is new and false when the pair was already claimed
	// (committed, or by a transaction that commits while this one waits). Arguments CheckClaim
	// rejects are an errs.Invalid.
	ClaimInbox(ctx context.Context, consumer, eventID string, at time.Time) (bool, error)
	// ClaimInboxBatch claims the pairs (consumer, id) of every id in eventIDs at at with one
	// statement, in the transaction bound to ctx, and returns the ids whose claim is new (in no
	// particular order), with ClaimInbox's rules for each: an id already claimed, or claimed by
	// a transaction that commits while this one waits, is not returned, and an id given twice is
	// claimed once. Arguments CheckClaim rejects are an errs.Invalid and claim nothing.
	ClaimInboxBatch(ctx context.Context, consumer string, eventIDs []string, at time.Time) ([]string, error)
	// PurgeInbox deletes the claims made before before and returns how many it deleted.
	PurgeInbox(ctx context.Context, before time.Time) (int64, error)
}

// Bounds of inbox keys: consumer names are bus tokens, event ids CloudEvents ids.
const (
	MaxConsumerName = 64
	MaxEventID      = events.MaxIDLength
)

// CheckClaim validates ClaimInbox's arguments; adapters call it.
func CheckClaim(consumer, eventID string) error {
	switch {
	case consumer == "" || len(consumer) > MaxConsumerName:
		return errs.Field("consumer", "must be 1 to 64 bytes")
	case eventID == "" || len(eventID) > MaxEventID:
		return errs.Field("event_id", "must be 1 to 128 bytes")
	}
	return nil
}

// Once applies an event's effect at most once per consumer, and exactly once when it is called
// until it succeeds: in one transaction of tx it claims (consumer, eventID) in inbox and, when
// the claim is new, runs apply with the transaction's ctx. An event already claimed returns
// (false, nil) without calling apply. When apply fails, the transaction rolls back — the claim
// with it, so a redelivery applies the event — and its error is returned as is (a bus.Terminal
// error stays terminal). See the package documentation for why this is exactly once in effect.
//
// apply must make its changes through store methods called with the ctx it receives.
func Once(ctx context.Context, tx TxRunner, inbox InboxStore, consumer, eventID string, apply func(ctx context.Context) error) (applied bool, err error) {
	if err := CheckClaim(consumer, eventID); err != nil {
		return false, err
	}
	err = tx.InTx(ctx, func(ctx context.Context) error {
		claimed, err := inbox.ClaimInbox(ctx, consumer, eventID, time.Now())
		if err != nil {
			return fmt.Errorf("consumer %s: claim event %s: %w", consumer, eventID, err)
		}
		if !claimed {
			return nil
		}
		if err := apply(ctx); err != nil {
			return err
		}
		applied = true
		return nil
	})
	if err != nil {
		return false, err
	}
	return applied, nil
}
