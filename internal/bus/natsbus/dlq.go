package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// deadLetterDoc is a dead letter as the DLQ stream stores it (JSON). The payload is base64:
// byte-identical whatever it holds.
type deadLetterDoc struct {
	ID       string        `json:"id"`
	Message  deadLetterMsg `json:"message"`
	Consumer string        `json:"consumer"`
	Reason   string        `json:"reason"`
	Attempts int           `json:"attempts"`
	StoredAt time.Time     `json:"stored_at"`
	FailedAt time.Time     `json:"failed_at"`
	Source   string        `json:"source"`
}

type deadLetterMsg struct {
	ID          string `json:"id"`
	Tenant      string `json:"tenant"`
	Type        string `json:"type"`
	TraceParent string `json:"traceparent,omitempty"`
	Payload     []byte `json:"payload"`
}

// AddDeadLetter implements bus.DeadLetters: dl is stored on the DLQ stream under
// <ns>.dlq.<tenant>.<consumer>, deduplicated by the broker on dl.ID+"@"+dl.Source.
func (b *Bus) AddDeadLetter(ctx context.Context, dl bus.DeadLetter) error {
	switch {
	case dl.ID == "" || len(dl.ID) > 128:
		return errs.Field("id", "must be 1 to 128 characters")
	case !bus.ValidToken(dl.Message.Tenant):
		return errs.Field("message.tenant", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case !bus.ValidToken(dl.Consumer):
		return errs.Field("consumer", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	}
	data, err := json.Marshal(deadLetterDoc{
		ID: dl.ID,
		Message: deadLetterMsg{
			ID: dl.Message.ID, Tenant: dl.Message.Tenant, Type: dl.Message.Type,
			TraceParent: dl.Message.TraceParent, Payload: dl.Message.Payload,
		},
		Consumer: dl.Consumer,
		Reason:   dl.Reason,
		Attempts: dl.Attempts,
		StoredAt: dl.StoredAt,
		FailedAt: dl.FailedAt,
		Source:   dl.Source,
	})
	if err != nil {
		return fmt.Errorf("add dead letter %s: %w", dl.ID, err)
	}
	msg := &nats.Msg{
		Subject: b.subj.DeadLetter(dl.Message.Tenant, dl.Consumer),
		Header: nats.Header{
			jetstream.MsgIDHeader:          {dl.ID + "@" + dl.Source},
			jetstream.ExpectedStreamHeader: {b.dlqName},
			hdrID:                          {dl.ID},
			hdrTenant:                      {dl.Message.Tenant},
			hdrContentType:                 {contentTypeDeadLetter},
		},
		Data: data,
	}
	if err := b.send(ctx, []*nats.Msg{msg}, true); err != nil {
		return fmt.Errorf("add dead letter %s: %w", dl.ID, err)
	}
	return nil
}

// dlqSubject is the DLQ subject filter of a tenant and a consumer ("" any).
func (b *Bus) dlqSubject(tenant, consumer string) (string, error) {
	if tenant != "" && !bus.ValidToken(tenant) {
		return "", errs.Field("tenant", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	}
	if consumer != "" && !bus.ValidToken(consumer) {
		return "", errs.Field("consumer", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	}
	if tenant == "" {
		tenant = "*"
	}
	if consumer == "" {
		consumer = "*"
	}
	return b.subj.DeadLetter(tenant, consumer), nil
}

// ListDeadLetters implements bus.DeadLetters by walking the DLQ stream from the cursor (a
// stream sequence) with "next message matching the subject" reads, so other tenants' and
// consumers' entries are skipped by the server. When the page is full it looks on for one more
// match, so that the last page has no next cursor.
func (b *Bus) ListDeadLetters(ctx context.Context, f bus.DLQFilter, after string, limit int) ([]bus.DeadLetter, string, error) {
	if limit < 1 {
		return nil, "", errs.Field("limit", "must be at least 1")
	}
	var seq uint64
	if after != "" {
		n, err := strconv.ParseUint(after, 10, 64)
		if err != nil || n == 0 {
			return nil, "", errs.Field("cursor", "is not a cursor of this list")
		}
		seq = n
	}
	subject, err := b.dlqSubject(f.Tenant, f.Consumer)
	if err != nil {
		return nil, "", err
	}
	var out []bus.DeadLetter
	for {
		raw, err := b.dlq.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, "", nil
		}
		if err != nil {
			return nil, "", unavailable(err, "list dead letters")
		}
		seq = raw.Sequence
		dl, err := decodeDeadLetter(raw)
		if err != nil {
			b.logger.Warn("skipping an unreadable dead letter", "stream", b.dlqName, "seq", raw.Sequence, "error", err.Error())
			continue
		}
		if !f.Match(dl) {
			continue
		}
		if len(out) == limit {
			// There is more: the next page starts after the last entry returned.
			return out, out[len(out)-1].Position, nil
		}
		out = append(out, dl)
	}
}

func decodeDeadLetter(raw *jetstream.RawStreamMsg) (bus.DeadLetter, error) {
	var doc deadLetterDoc
	if err := json.Unmarshal(raw.Data, &doc); err != nil {
		return bus.DeadLetter{}, err
	}
	return bus.DeadLetter{
		ID: doc.ID,
		Message: bus.Message{
			ID: doc.Message.ID, Tenant: doc.Message.Tenant, Type: doc.Message.Type,
			TraceParent: doc.Message.TraceParent, Payload: doc.Message.Payload,
		},
		Consumer: doc.Consumer,
		Reason:   doc.Reason,
		Attempts: doc.Attempts,
		StoredAt: doc.StoredAt.UTC(),
		FailedAt: doc.FailedAt.UTC(),
		Source:   doc.Source,
		Position: strconv.FormatUint(raw.Sequence, 10),
	}, nil
}

// RemoveDeadLetters implements bus.DeadLetters: each Position is deleted from the DLQ stream.
func (b *Bus) RemoveDeadLetters(ctx context.Context, dls []bus.DeadLetter) error {
	for _, dl := range dls {
		seq, err := strconv.ParseUint(dl.Position, 10, 64)
		if err != nil || seq == 0 {
			return errs.Field("position", fmt.Sprintf("%q is not a dead letter position", dl.Position))
		}
		if err := b.deleteMsg(ctx, b.dlqName, seq); err != nil && !msgGone(err) {
			return unavailable(err, "remove dead letter %s at %d", dl.ID, seq)
		}
	}
	return nil
}

// deleteMsg deletes message seq of stream (without overwriting it). It makes the API request
// itself because the client's DeleteMsg flattens the server's error into text, and "already
// gone" must be told apart from a failure.
func (b *Bus) deleteMsg(ctx context.Context, stream string, seq uint64) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, apiTimeout)
		defer cancel()
	}
	req, err := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NoErase bool   `json:"no_erase"`
	}{seq, true})
	if err != nil {
		return err
	}
	reply, err := b.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.DELETE."+stream, req)
	if err != nil {
		return fmt.Errorf("delete message %d of %s: %w", seq, stream, err)
	}
	var resp struct {
		Success bool                `json:"success"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return fmt.Errorf("delete message %d of %s: malformed answer: %w", seq, stream, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("delete message %d of %s: %w", seq, stream, resp.Error)
	}
	if !resp.Success {
		return fmt.Errorf("delete message %d of %s: %w", seq, stream, jetstream.ErrMsgDeleteUnsuccessful)
	}
	return nil
}

// apiTimeout bounds a JetStream API request whose context has no deadline, as the client does.
const apiTimeout = 5 * time.Second

// JetStream error codes of a deletion of a message that is not there (the server's
// JSSequenceNotFoundErrF and JSStreamMsgDeleteFailedF; the client has no names for them).
const (
	errCodeSequenceNotFound jetstream.ErrorCode = 10043
	errCodeMsgDeleteFailed  jetstream.ErrorCode = 10057
)

// msgGone reports whether a deletion failed because the message is already gone.
func msgGone(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jetstream.JSErrCodeMessageNotFound, errCodeSequenceNotFound:
		return true
	case errCodeMsgDeleteFailed:
		return strings.Contains(apiErr.Description, "no message found")
	}
	return false
}

// CountDeadLetters implements bus.DeadLetters from the DLQ stream's state: its message count,
// or the per-subject counts of the tenant's subjects (one per consumer).
func (b *Bus) CountDeadLetters(ctx context.Context, tenant string) (int64, error) {
	if tenant == "" {
		info, err := b.dlq.Info(ctx)
		if err != nil {
			return 0, unavailable(err, "count dead letters")
		}
		return int64(info.State.Msgs), nil
	}
	subject, err := b.dlqSubject(tenant, "")
	if err != nil {
		return 0, err
	}
	info, err := b.dlq.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, unavailable(err, "count dead letters of %s", tenant)
	}
	var n int64
	for _, c := range info.State.Subjects {
		n += int64(c)
	}
	return n, nil
}
