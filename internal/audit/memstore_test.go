package audit_test

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
)

// memStore is an in-memory audit.Store laid out like the SQL tables the adapters will have:
// audit_records(tree, seq, canonical) with no primary key enforced on raw writes, so tests can
// tamper the way an attacker with database access would; audit_hashes(tree, idx, hash);
// audit_trees(tree, size); audit_checkpoints(tree, size, hash, note).
type memStore struct {
	mu          sync.Mutex
	rows        []memRow
	hashes      map[string]map[int64]tlog.Hash
	heads       map[string]int64
	checkpoints []audit.Checkpoint

	// Injected failures.
	sizeErr, readErr, appendErr, recordsErr, saveErr, latestErr, treesErr error
	// recordsHook, when set, runs first in Records and fails it with its error.
	recordsHook func(from, to int64) error
	// shortHashes makes ReadHashes return one hash too few, as a broken adapter would.
	shortHashes bool
}

type memRow struct {
	tree      string
	seq       int64
	canonical []byte
}

var _ audit.Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{hashes: map[string]map[int64]tlog.Hash{}, heads: map[string]int64{}}
}

func (m *memStore) TreeSize(_ context.Context, tree string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sizeErr != nil {
		return 0, m.sizeErr
	}
	return m.heads[tree], nil
}

func (m *memStore) ReadHashes(_ context.Context, tree string, indexes []int64) ([]tlog.Hash, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readErr != nil {
		return nil, m.readErr
	}
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := m.hashes[tree][idx]
		if !ok {
			return nil, errs.New(errs.NotFound, "hash %d of tree %s not found", idx, tree)
		}
		out[i] = h
	}
	if m.shortHashes && len(out) > 0 {
		out = out[:len(out)-1]
	}
	return out, nil
}

func (m *memStore) AppendRecord(_ context.Context, rec audit.Record, canonical []byte, hashes []tlog.Hash) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.appendErr != nil {
		return m.appendErr
	}
	for _, r := range m.rows {
		if r.tree == rec.Tree && r.seq == rec.Seq {
			return errs.New(errs.Conflict, "record %s/%d exists", rec.Tree, rec.Seq)
		}
	}
	m.rows = append(m.rows, memRow{tree: rec.Tree, seq: rec.Seq, canonical: slices.Clone(canonical)})
	base := tlog.StoredHashIndex(0, rec.Seq)
	for i, h := range hashes {
		m.setHash(rec.Tree, base+int64(i), h)
	}
	m.heads[rec.Tree] = rec.Seq + 1
	return nil
}

func (m *memStore) setHash(tree string, idx int64, h tlog.Hash) {
	if m.hashes[tree] == nil {
		m.hashes[tree] = map[int64]tlog.Hash{}
	}
	m.hashes[tree][idx] = h
}

func (m *memStore) Records(_ context.Context, tree string, from, to int64, limit int) ([]audit.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recordsErr != nil {
		return nil, m.recordsErr
	}
	if m.recordsHook != nil {
		if err := m.recordsHook(from, to); err != nil {
			return nil, err
		}
	}
	var out []audit.Entry
	for _, r := range m.rows {
		if r.tree == tree && r.seq >= from && r.seq < to {
			out = append(out, audit.Entry{Seq: r.seq, Canonical: slices.Clone(r.canonical)})
		}
	}
	slices.SortStableFunc(out, func(a, b audit.Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *memStore) Trees(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.treesErr != nil {
		return nil, m.treesErr
	}
	set := map[string]bool{}
	for t := range m.heads {
		set[t] = true
	}
	for _, r := range m.rows {
		set[r.tree] = true
	}
	for _, c := range m.checkpoints {
		set[c.Tree] = true
	}
	return slices.Sorted(maps.Keys(set)), nil
}

func (m *memStore) SaveCheckpoint(_ context.Context, cp audit.Checkpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.saveErr != nil {
		return m.saveErr
	}
	for _, c := range m.checkpoints {
		if c.Tree == cp.Tree && c.Size == cp.Size {
			return nil
		}
	}
	cp.Note = slices.Clone(cp.Note)
	m.checkpoints = append(m.checkpoints, cp)
	return nil
}

func (m *memStore) LatestCheckpoint(_ context.Context, tree string) (audit.Checkpoint, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.latestErr != nil {
		return audit.Checkpoint{}, false, m.latestErr
	}
	var best audit.Checkpoint
	found := false
	for _, c := range m.checkpoints {
		if c.Tree == tree && (!found || c.Size > best.Size) {
			best, found = c, true
		}
	}
	return best, found, nil
}

// The attacker's tools: raw edits of the tables, bypassing every rule.

// rowIndex returns the index in m.rows of the first row of tree at seq.
func (m *memStore) rowIndex(tree string, seq int64) int {
	for i, r := range m.rows {
		if r.tree == tree && r.seq == seq {
			return i
		}
	}
	panic("no such row")
}

func (m *memStore) rawRecord(tree string, seq int64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.rows[m.rowIndex(tree, seq)].canonical)
}

func (m *memStore) setRaw(tree string, seq int64, canonical []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rows[m.rowIndex(tree, seq)].canonical = slices.Clone(canonical)
}

func (m *memStore) deleteRow(tree string, seq int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.rowIndex(tree, seq)
	m.rows = slices.Delete(m.rows, i, i+1)
}

func (m *memStore) insertRow(tree string, seq int64, canonical []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rows = append(m.rows, memRow{tree: tree, seq: seq, canonical: slices.Clone(canonical)})
}

// setSeq changes the seq column of the row of tree at seq.
func (m *memStore) setSeq(tree string, seq, newSeq int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rows[m.rowIndex(tree, seq)].seq = newSeq
}

func (m *memStore) setHead(tree string, size int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.heads[tree] = size
}

func (m *memStore) deleteHash(tree string, idx int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.hashes[tree], idx)
}

func (m *memStore) putHash(tree string, idx int64, h tlog.Hash) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setHash(tree, idx, h)
}

func (m *memStore) hash(tree string, idx int64) tlog.Hash {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hashes[tree][idx]
}

func (m *memStore) setCheckpoints(cps ...audit.Checkpoint) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checkpoints = cps
}
