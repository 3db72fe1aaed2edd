package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/store"
)

// Page sizes of ListAudit; the contract bounds limit to 1..500 as well.
const (
	defaultAuditLimit = 50
	maxAuditLimit     = 500
)

func (h *handlers) ListAudit(ctx context.Context, req gen.ListAuditRequestObject) (gen.ListAuditResponseObject, error) {
	tree, err := h.treeFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	limit := deref(req.Params.Limit)
	switch {
	case limit == 0:
		limit = defaultAuditLimit
	case limit < 1 || limit > maxAuditLimit:
		return nil, errs.Field("query.limit", fmt.Sprintf("must be between 1 and %d", maxAuditLimit))
	}
	after, err := auditCursor(deref(req.Params.Cursor))
	if err != nil {
		return nil, err
	}
	f := store.AuditFilter{AfterSeq: after, Action: deref(req.Params.Action), Limit: limit + 1}
	if d := req.Params.Decision; d != nil {
		f.Allowed = ptr(*d == gen.Allow)
	}
	// One more than asked tells whether a next page exists without a second query.
	entries, err := h.deps.AuditLog.AuditRecords(ctx, tree, f)
	if err != nil {
		return nil, fmt.Errorf("list audit records of %s: %w", tree, err)
	}
	out := gen.ListAudit200JSONResponse{Items: make([]gen.AuditRecord, 0, min(len(entries), limit))}
	if len(entries) > limit {
		entries = entries[:limit]
		out.NextCursor = ptr(strconv.FormatInt(entries[limit-1].Seq, 10))
	}
	for _, e := range entries {
		r, err := e.Record()
		if err != nil {
			return nil, errs.Wrap(errs.Internal, fmt.Errorf("%w: tree %s row %d: %w", audit.ErrTampered, tree, e.Seq, err), "audit log does not verify")
		}
		out.Items = append(out.Items, auditRecordOut(r))
	}
	return out, nil
}

// auditCursor parses a ListAudit cursor: the decimal seq of the last record of the previous
// page. "" starts from the first record.
func auditCursor(s string) (int64, error) {
	if s == "" {
		return -1, nil
	}
	seq, err := strconv.ParseInt(s, 10, 64)
	if err != nil || seq < 0 || strconv.FormatInt(seq, 10) != s {
		return 0, errs.Field("query.cursor", "not a cursor returned by this API")
	}
	return seq, nil
}

func (h *handlers) GetAuditCheckpoint(ctx context.Context, req gen.GetAuditCheckpointRequestObject) (gen.GetAuditCheckpointResponseObject, error) {
	tree, err := h.treeFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	cp, err := h.latestCheckpoint(ctx, tree)
	if err != nil {
		return nil, err
	}
	return gen.GetAuditCheckpoint200JSONResponse{
		Tree:        cp.Tree,
		Size:        cp.Size,
		RootHash:    base64.StdEncoding.EncodeToString(cp.Hash[:]),
		Note:        string(cp.Note),
		VerifierKey: h.deps.AuditKey,
	}, nil
}

// latestCheckpoint returns the latest checkpoint of tree, or an errs.NotFound before the first.
func (h *handlers) latestCheckpoint(ctx context.Context, tree string) (audit.Checkpoint, error) {
	cp, ok, err := h.deps.AuditLog.LatestCheckpoint(ctx, tree)
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("latest audit checkpoint of %s: %w", tree, err)
	}
	if !ok {
		return audit.Checkpoint{}, errs.New(errs.NotFound, "the audit log has no signed checkpoint yet")
	}
	return cp, nil
}

// GetAuditInclusionProof serves the proof bundle of one record. audit.MakeBundle proves against
// the latest signed checkpoint only (the store keeps no index of older ones), so a size other
// than the latest checkpoint's names a checkpoint this API cannot serve: "not found", with the
// size that can be asked for.
func (h *handlers) GetAuditInclusionProof(ctx context.Context, req gen.GetAuditInclusionProofRequestObject) (gen.GetAuditInclusionProofResponseObject, error) {
	tree, err := h.treeFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	want := req.Params.Size
	if want != nil {
		cp, err := h.latestCheckpoint(ctx, tree)
		if err != nil {
			return nil, err
		}
		if cp.Size != *want {
			return nil, noCheckpointOfSize(*want, cp.Size)
		}
	}
	b, err := audit.MakeBundle(ctx, h.deps.AuditLog, tree, req.Params.Seq, h.deps.AuditKeys)
	if err != nil {
		return nil, inQuery(err, "seq")
	}
	if want != nil {
		// A checkpoint signed since the check above would prove against another size than asked.
		// MakeBundle verified the note, so it opens.
		cp, err := audit.OpenCheckpoint(b.Checkpoint, h.deps.AuditKeys)
		if err != nil {
			return nil, fmt.Errorf("open the checkpoint of a fresh proof bundle: %w", err)
		}
		if cp.Size != *want {
			return nil, noCheckpointOfSize(*want, cp.Size)
		}
	}
	raw, err := audit.MarshalBundle(b)
	if err != nil {
		return nil, fmt.Errorf("encode proof bundle of %s record %d: %w", tree, req.Params.Seq, err)
	}
	// Numbers stay json.Number, so seq is written back exactly as MarshalBundle wrote it.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out gen.AuditProofBundle
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("decode proof bundle of %s record %d: %w", tree, req.Params.Seq, err)
	}
	return gen.GetAuditInclusionProof200JSONResponse(out), nil
}

func noCheckpointOfSize(size, latest int64) error {
	return errs.New(errs.NotFound, "no signed checkpoint of size %d can be served; the latest has size %d", size, latest)
}

func (h *handlers) GetAuditConsistencyProof(ctx context.Context, req gen.GetAuditConsistencyProofRequestObject) (gen.GetAuditConsistencyProofResponseObject, error) {
	tree, err := h.treeFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	from, to := req.Params.From, req.Params.To
	proof, err := audit.ConsistencyProof(ctx, h.deps.AuditLog, tree, from, to)
	if err != nil {
		return nil, inQuery(err, "from", "to")
	}
	out := gen.GetAuditConsistencyProof200JSONResponse{Tree: tree, From: from, To: to, Proof: make([]string, len(proof))}
	for i, p := range proof {
		out.Proof[i] = base64.StdEncoding.EncodeToString(p[:])
	}
	return out, nil
}

func (h *handlers) VerifyAudit(ctx context.Context, req gen.VerifyAuditRequestObject) (gen.VerifyAuditResponseObject, error) {
	tree, err := h.treeFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	rep, err := audit.Verify(ctx, h.deps.AuditLog, tree, h.deps.AuditKeys)
	if err != nil {
		return nil, fmt.Errorf("verify audit tree %s: %w", tree, err)
	}
	return verifyReportOut(rep)
}

func verifyReportOut(rep audit.Report) (gen.VerifyAudit200JSONResponse, error) {
	out := gen.VerifyAudit200JSONResponse{
		Tree:            rep.Tree,
		Ok:              rep.OK,
		TreeSize:        rep.TreeSize,
		RecordsVerified: rep.Verified,
	}
	if rep.FirstBadSeq >= 0 {
		out.FirstBadSeq = ptr(rep.FirstBadSeq)
	}
	if rep.Checkpoint != nil {
		// The contract leaves the checkpoint status open; its JSON is the audit package's.
		raw, err := json.Marshal(rep.Checkpoint)
		if err != nil {
			return out, fmt.Errorf("encode checkpoint status: %w", err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return out, fmt.Errorf("decode checkpoint status: %w", err)
		}
		out.Checkpoint = &m
	}
	problems := make([]struct {
		Detail string `json:"detail"`
		Kind   string `json:"kind"`
		Seq    int64  `json:"seq"`
	}, len(rep.Problems))
	for i, p := range rep.Problems {
		problems[i].Detail, problems[i].Kind, problems[i].Seq = p.Detail, string(p.Kind), p.Seq
	}
	out.Problems = &problems
	return out, nil
}

func auditRecordOut(r audit.Record) gen.AuditRecord {
	out := gen.AuditRecord{
		Tree:          r.Tree,
		Seq:           r.Seq,
		Time:          r.Time.UTC(),
		Action:        r.Action,
		Resource:      r.Resource,
		RequestDigest: r.RequestDigest,
	}
	out.Actor.Principal, out.Actor.Ip, out.Actor.RequestId = r.Actor.Principal, r.Actor.IP, r.Actor.RequestID
	out.Decision.Allowed, out.Decision.Reason = r.Decision.Allowed, r.Decision.Reason
	return out
}

// inQuery renames the fields the audit package names bare ("seq") to where they are in the
// request ("query.seq"), so that a problem points at the query parameter.
func inQuery(err error, names ...string) error {
	e := errs.As(err)
	if e == nil || len(e.Fields) == 0 {
		return err
	}
	renamed := *e
	renamed.Fields = make([]errs.FieldError, len(e.Fields))
	for i, f := range e.Fields {
		for _, n := range names {
			if f.Name == n {
				f.Name = "query." + n
			}
		}
		renamed.Fields[i] = f
	}
	return &renamed
}
