package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/errs"
)

// BundleFormat is the "format" member of a proof bundle.
const BundleFormat = "nops-audit-inclusion-proof-v1"

// MaxBundleSize bounds the proof bundles ParseBundle accepts.
const MaxBundleSize = 256 << 10

// Bundle is everything an outside auditor needs to check that one record is in a signed tree,
// besides the verifier key: the record's canonical encoding, its seq, the inclusion proof and
// the signed checkpoint. Its JSON form (MarshalBundle) is:
//
//	{
//	  "format": "nops-audit-inclusion-proof-v1",
//	  "seq": 42,
//	  "record": "<canonical record, padded standard base64>",
//	  "proof": ["<hash, padded standard base64>", …],
//	  "checkpoint": "<signed checkpoint note text>"
//	}
type Bundle struct {
	Seq        int64
	Record     []byte
	Proof      tlog.RecordProof
	Checkpoint []byte
}

type wireBundle struct {
	Format     string   `json:"format"`
	Seq        int64    `json:"seq"`
	Record     string   `json:"record"`
	Proof      []string `json:"proof"`
	Checkpoint string   `json:"checkpoint"`
}

func (b Bundle) validate() error {
	switch {
	case b.Seq < 0:
		return errs.Field("seq", "must not be negative")
	case len(b.Record) == 0:
		return errs.Field("record", "required")
	case len(b.Record) > MaxCanonicalSize:
		return errs.Field("record", fmt.Sprintf("longer than %d bytes", MaxCanonicalSize))
	case len(b.Proof) > maxProofLen:
		return errs.Field("proof", fmt.Sprintf("more than %d hashes", maxProofLen))
	case len(b.Checkpoint) == 0:
		return errs.Field("checkpoint", "required")
	case len(b.Checkpoint) > maxNoteSize:
		return errs.Field("checkpoint", fmt.Sprintf("longer than %d bytes", maxNoteSize))
	}
	return nil
}

// MarshalBundle returns the JSON form of b, indented, ending in a newline.
func MarshalBundle(b Bundle) ([]byte, error) {
	if err := b.validate(); err != nil {
		return nil, err
	}
	w := wireBundle{
		Format:     BundleFormat,
		Seq:        b.Seq,
		Record:     base64.StdEncoding.EncodeToString(b.Record),
		Proof:      make([]string, len(b.Proof)),
		Checkpoint: string(b.Checkpoint),
	}
	for i, h := range b.Proof {
		w.Proof[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("encode proof bundle: %w", err)
	}
	return buf.Bytes(), nil
}

// ParseBundle parses the JSON form of a proof bundle. It is strict: one object with exactly the
// members format (equal to BundleFormat), seq, record, proof and checkpoint, each once and of its
// type, base64 in its padded standard form only, hashes of 32 bytes, and nothing after the
// object. It checks the form only; CheckBundle checks the content.
func ParseBundle(data []byte) (Bundle, error) {
	if len(data) > MaxBundleSize {
		return Bundle{}, errs.New(errs.Invalid, "proof bundle longer than %d bytes", MaxBundleSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Bundle{}, errs.New(errs.Invalid, "proof bundle is not a JSON object")
	}
	var b Bundle
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Bundle{}, errs.Wrap(errs.Invalid, err, "malformed proof bundle")
		}
		key, _ := tok.(string)
		if seen[key] {
			return Bundle{}, errs.Field(key, "appears twice")
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return Bundle{}, errs.Wrap(errs.Invalid, err, "malformed proof bundle")
		}
		if err := b.setMember(key, raw); err != nil {
			return Bundle{}, err
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return Bundle{}, errs.New(errs.Invalid, "malformed proof bundle")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Bundle{}, errs.New(errs.Invalid, "data after the proof bundle")
	}
	for _, k := range []string{"format", "seq", "record", "proof", "checkpoint"} {
		if !seen[k] {
			return Bundle{}, errs.Field(k, "required")
		}
	}
	if err := b.validate(); err != nil {
		return Bundle{}, err
	}
	return b, nil
}

// setMember decodes one member of a bundle. null is refused for every member: it is no value of
// any of their types.
func (b *Bundle) setMember(key string, raw json.RawMessage) error {
	if string(raw) == "null" {
		return errs.Field(key, "must not be null")
	}
	switch key {
	case "format":
		var f string
		if err := json.Unmarshal(raw, &f); err != nil || f != BundleFormat {
			return errs.Field("format", "must be "+BundleFormat)
		}
	case "seq":
		if err := json.Unmarshal(raw, &b.Seq); err != nil {
			return errs.Field("seq", "must be an integer")
		}
	case "record":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return errs.Field("record", "must be a string")
		}
		rec, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return errs.Field("record", "must be padded standard base64")
		}
		b.Record = rec
	case "proof":
		var hs []string
		if err := json.Unmarshal(raw, &hs); err != nil {
			return errs.Field("proof", "must be an array of strings")
		}
		if len(hs) > maxProofLen {
			return errs.Field("proof", fmt.Sprintf("more than %d hashes", maxProofLen))
		}
		b.Proof = make(tlog.RecordProof, len(hs))
		for i, s := range hs {
			h, err := parseHash(s)
			if err != nil {
				return errs.Field(fmt.Sprintf("proof[%d]", i), "must be a 32-byte hash in padded standard base64")
			}
			b.Proof[i] = h
		}
	case "checkpoint":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return errs.Field("checkpoint", "must be a string")
		}
		b.Checkpoint = []byte(s)
	default:
		return errs.Field(key, "unknown member")
	}
	return nil
}

// CheckBundle verifies b with CheckInclusion.
func CheckBundle(b Bundle, verifierKey string) error {
	return CheckInclusion(b.Record, b.Proof, b.Seq, b.Checkpoint, verifierKey)
}

// MakeBundle builds the proof bundle of record seq of tree against the latest stored checkpoint,
// which must verify with verifiers (the kernel passes its Signer's verifier), and checks the
// bundle against that checkpoint's root before returning it, so the kernel never serves a bundle
// an auditor would reject. No checkpoint yet is errs.NotFound; a seq the checkpoint does not
// cover is errs.Invalid; a checkpoint that does not verify or a record that does not match it is
// an error wrapping ErrTampered.
func MakeBundle(ctx context.Context, st Store, tree string, seq int64, verifiers note.Verifiers) (Bundle, error) {
	if !ValidTree(tree) {
		return Bundle{}, errs.Field("tree", "must be 1 to 128 ASCII letters, digits, '_' or '-'")
	}
	if seq < 0 {
		return Bundle{}, errs.Field("seq", "must not be negative")
	}
	stored, ok, err := st.LatestCheckpoint(ctx, tree)
	if err != nil {
		return Bundle{}, fmt.Errorf("audit tree %s latest checkpoint: %w", tree, err)
	}
	if !ok {
		return Bundle{}, errs.New(errs.NotFound, "audit tree %s has no checkpoint yet", tree)
	}
	cp, err := OpenCheckpoint(stored.Note, verifiers)
	if err == nil && cp.Tree != tree {
		err = fmt.Errorf("checkpoint is of tree %s", cp.Tree)
	}
	if err != nil {
		return Bundle{}, errs.Wrap(errs.Internal, fmt.Errorf("%w: latest checkpoint of tree %s: %w", ErrTampered, tree, err), "audit log does not verify")
	}
	if seq >= cp.Size {
		return Bundle{}, errs.Field("seq", fmt.Sprintf("not covered by the latest checkpoint (size %d)", cp.Size))
	}
	rows, err := st.Records(ctx, tree, seq, seq+1, 2)
	if err != nil {
		return Bundle{}, fmt.Errorf("audit tree %s record %d: %w", tree, seq, err)
	}
	if len(rows) != 1 {
		return Bundle{}, errs.Wrap(errs.Internal, fmt.Errorf("%w: tree %s has %d records at seq %d", ErrTampered, tree, len(rows), seq), "audit log does not verify")
	}
	proof, err := tlog.ProveRecord(cp.Size, seq, hashReader(ctx, st, tree))
	if err != nil {
		return Bundle{}, fmt.Errorf("audit tree %s inclusion proof of %d in %d: %w", tree, seq, cp.Size, err)
	}
	if err := tlog.CheckRecord(proof, cp.Size, cp.Hash, seq, tlog.RecordHash(rows[0].Canonical)); err != nil {
		return Bundle{}, errs.Wrap(errs.Internal, fmt.Errorf("%w: tree %s record %d is not in its latest checkpoint", ErrTampered, tree, seq), "audit log does not verify")
	}
	return Bundle{Seq: seq, Record: rows[0].Canonical, Proof: proof, Checkpoint: cp.Note}, nil
}
