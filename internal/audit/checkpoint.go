package audit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/errs"
)

// ErrTampered is in the chain of every error that means the stored log contradicts a checkpoint
// signed with the log's own key. The kernel should alert on it: the database has been altered.
var ErrTampered = errors.New("audit log contradicts its signed checkpoint")

// maxNoteSize bounds a signed checkpoint accepted from outside; ours are about 200 bytes.
const maxNoteSize = 16 << 10

// Origin returns the checkpoint origin (first body line) of tree under a key named keyName.
func Origin(keyName, tree string) string { return keyName + "/" + tree }

// checkpointBody is the C2SP tlog-checkpoint body: origin, decimal size, base64 root hash.
func checkpointBody(origin string, size int64, root tlog.Hash) string {
	return origin + "\n" + strconv.FormatInt(size, 10) + "\n" + base64.StdEncoding.EncodeToString(root[:]) + "\n"
}

// OpenCheckpoint verifies a signed checkpoint with verifiers and parses its body. The note must
// carry a valid signature by one of verifiers, and its body must be exactly three lines: the
// origin "<name>/<tree>" where <name> is the name of a key whose signature verified, the size in
// decimal without leading zeros, and the root hash in padded standard base64. Anything else is an
// errs.Invalid error.
func OpenCheckpoint(signed []byte, verifiers note.Verifiers) (Checkpoint, error) {
	cp, _, err := openCheckpoint(signed, verifiers)
	return cp, err
}

// openCheckpoint is OpenCheckpoint also returning the opened note.
func openCheckpoint(signed []byte, verifiers note.Verifiers) (Checkpoint, *note.Note, error) {
	if len(signed) > maxNoteSize {
		return Checkpoint{}, nil, errs.New(errs.Invalid, "checkpoint longer than %d bytes", maxNoteSize)
	}
	n, err := note.Open(signed, verifiers)
	if err != nil {
		return Checkpoint{}, nil, errs.Wrap(errs.Invalid, err, "checkpoint signature does not verify")
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return Checkpoint{}, nil, errs.New(errs.Invalid, "checkpoint body must be exactly three lines")
	}
	origin := lines[0]
	slash := strings.LastIndexByte(origin, '/')
	if slash < 0 {
		return Checkpoint{}, nil, errs.New(errs.Invalid, "checkpoint origin %q is not <key name>/<tree>", origin)
	}
	name, tree := origin[:slash], origin[slash+1:]
	if !ValidTree(tree) {
		return Checkpoint{}, nil, errs.New(errs.Invalid, "checkpoint origin %q names no valid tree", origin)
	}
	signedByOrigin := false
	for _, s := range n.Sigs {
		if s.Name == name {
			signedByOrigin = true
		}
	}
	if !signedByOrigin {
		return Checkpoint{}, nil, errs.New(errs.Invalid, "checkpoint origin %q is not signed by a key named %q", origin, name)
	}
	size, err := parseSize(lines[1])
	if err != nil {
		return Checkpoint{}, nil, errs.Wrap(errs.Invalid, err, "malformed checkpoint size")
	}
	root, err := parseHash(lines[2])
	if err != nil {
		return Checkpoint{}, nil, errs.Wrap(errs.Invalid, err, "malformed checkpoint root hash")
	}
	return Checkpoint{Tree: tree, Size: size, Hash: root, Note: signed}, n, nil
}

// parseSize parses a non-negative decimal int64 with no sign and no leading zeros.
func parseSize(s string) (int64, error) {
	if s == "" || len(s) > 1 && s[0] == '0' || s[0] < '0' || s[0] > '9' {
		return 0, fmt.Errorf("size %q is not a canonical decimal", s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	return n, nil
}

// parseHash decodes a hash in padded standard base64, refusing every other spelling of the same
// bytes so that a hash has one text form.
func parseHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		return h, fmt.Errorf("hash %q is not %d bytes in padded standard base64", s, tlog.HashSize)
	}
	copy(h[:], b)
	return h, nil
}

// SignCheckpoint signs the current head of tree with s and stores the checkpoint. The root is
// computed with tlog.TreeHash over the stored hashes.
//
// Before signing, it authenticates the latest stored checkpoint with s's own verifier and checks
// that the current tree extends it (a tlog consistency proof over the stored hashes): it never
// signs a tree whose signed prefix was rewritten, shrunk or replaced, and returns an error
// wrapping ErrTampered instead. A latest checkpoint signed only by other keys (the key was
// rotated) cannot be authenticated and is treated as absent, as if the row had been deleted. If
// the tree has not grown since the latest checkpoint, that checkpoint is returned and nothing is
// stored. An empty tree is an errs.Invalid error: there is nothing to sign.
//
// SignCheckpoint takes no lock: the hashes of a tree of a given size never change, so an append
// committing meanwhile only makes the checkpoint one record older.
func SignCheckpoint(ctx context.Context, st Store, s *Signer, tree string) (Checkpoint, error) {
	if !ValidTree(tree) {
		return Checkpoint{}, errs.Field("tree", "must be 1 to 128 ASCII letters, digits, '_' or '-'")
	}
	size, err := st.TreeSize(ctx, tree)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit tree %s size: %w", tree, err)
	}
	if size <= 0 {
		return Checkpoint{}, errs.New(errs.Invalid, "audit tree %s has no records to sign", tree)
	}
	r := hashReader(ctx, st, tree)
	root, err := tlog.TreeHash(size, r)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit tree %s root at %d: %w", tree, size, err)
	}
	prev, ok, err := st.LatestCheckpoint(ctx, tree)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit tree %s latest checkpoint: %w", tree, err)
	}
	if ok {
		pc, trusted, err := openOwnCheckpoint(prev, s, tree)
		if err != nil {
			return Checkpoint{}, err
		}
		if trusted {
			same, err := extends(pc, size, root, r)
			if errors.Is(err, ErrTampered) {
				return Checkpoint{}, errs.Wrap(errs.Internal, fmt.Errorf("tree %s: %w", tree, err), "audit log does not verify")
			}
			if err != nil {
				return Checkpoint{}, fmt.Errorf("audit tree %s: %w", tree, err)
			}
			if same {
				return pc, nil
			}
		}
	}
	text := checkpointBody(Origin(s.Name(), tree), size, root)
	signed, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("sign audit checkpoint %s/%d: %w", tree, size, err)
	}
	cp := Checkpoint{Tree: tree, Size: size, Hash: root, Note: signed}
	if err := st.SaveCheckpoint(ctx, cp); err != nil {
		return Checkpoint{}, fmt.Errorf("save audit checkpoint %s/%d: %w", tree, size, err)
	}
	return cp, nil
}

// openOwnCheckpoint authenticates a stored checkpoint of tree with s's verifier. trusted is false
// when the note is signed by other keys only; any other failure wraps ErrTampered.
func openOwnCheckpoint(stored Checkpoint, s *Signer, tree string) (cp Checkpoint, trusted bool, err error) {
	cp, err = OpenCheckpoint(stored.Note, note.VerifierList(s.Verifier()))
	if err != nil {
		if _, unverified := errors.AsType[*note.UnverifiedNoteError](err); unverified {
			return Checkpoint{}, false, nil
		}
		return Checkpoint{}, false, errs.Wrap(errs.Internal, fmt.Errorf("%w: latest checkpoint of tree %s: %w", ErrTampered, tree, err), "audit log does not verify")
	}
	if cp.Tree != tree || cp.Size != stored.Size || cp.Hash != stored.Hash || stored.Tree != tree {
		return Checkpoint{}, false, errs.Wrap(errs.Internal,
			fmt.Errorf("%w: checkpoint stored for tree %s size %d is a note for tree %s size %d", ErrTampered, stored.Tree, stored.Size, cp.Tree, cp.Size),
			"audit log does not verify")
	}
	return cp, true, nil
}

// extends checks that the tree of the given size and root has cp's tree as a prefix, with a tlog
// consistency proof read through r. same reports that the tree has not grown. A contradiction
// wraps ErrTampered; a failure to read hashes does not.
func extends(cp Checkpoint, size int64, root tlog.Hash, r tlog.HashReader) (same bool, err error) {
	switch {
	case cp.Size > size:
		return false, fmt.Errorf("%w: signed size %d is larger than the tree size %d", ErrTampered, cp.Size, size)
	case cp.Size == size:
		if root != cp.Hash {
			return false, fmt.Errorf("%w: root at size %d is %s, signed %s", ErrTampered, size, root, cp.Hash)
		}
		return true, nil
	case cp.Size == 0:
		// The empty tree is a prefix of every tree; tlog proves from size 1 on.
		return false, nil
	}
	proof, err := tlog.ProveTree(size, cp.Size, r)
	if err != nil {
		return false, fmt.Errorf("consistency proof from %d to %d: %w", cp.Size, size, err)
	}
	if err := tlog.CheckTree(proof, size, root, cp.Size, cp.Hash); err != nil {
		return false, fmt.Errorf("%w: the tree of size %d does not extend the signed tree of size %d", ErrTampered, size, cp.Size)
	}
	return false, nil
}
