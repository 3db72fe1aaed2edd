package reqsig

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FileNonces is a NonceStore for a single kernel process: the live nonces in memory, each
// accepted claim appended to a journal of files in a directory (journal.go) before it is
// reported, and the journal replayed when the store opens, so an accepted nonce is refused after
// a restart. It takes an exclusive lock on the directory, so a second process on it fails to open
// it; replicas cannot share it (use the SQL store or Redis).
//
// Claims are written in groups, as GroupCommitNonces commits them: the first claim to arrive
// writes (it leads), the claims that arrive meanwhile wait, and the first of them writes them all
// once the write ends. With DurabilityFull every group is fsynced before any of its claims is
// reported; with DurabilityProcess it is written (to the operating system's page cache) but not
// flushed: it survives a crash of the kernel, not of the operating system.
//
// A claim reports true only once its record is written (and synced); a failed write or sync
// fails every claim of its group, none of which is then remembered in memory, and the segment
// written to is abandoned: the next group starts a new one, so no later record follows a torn
// one. Records of a failed group that reached the disk anyway are found on the next replay and
// refuse their nonces: a refusal, never a second acceptance.
//
// The journal is cut into segments: a new one every SegmentSpan and at every open; a segment
// none of whose records is live any more is deleted by PurgeNonces (RunNoncePurger) and at open.
// Replay ignores the records after the first torn or corrupt one of a segment and truncates the
// segment there, with a warning: after a crash in the middle of an append those records' claims
// were never reported; damage on disk, which a checksum cannot repair, loses the records after it
// (their nonces could be replayed until their signatures are too old).
//
// Concurrency: safe for concurrent use. mu guards the live set, the queue of claims and the list
// of segments; it is never held across a write or sync. The current segment's file is used only
// by the leading claim, one at a time; Close waits for it (writeMu). A waiting claim does not give
// up when its context ends (its group's write is bounded by the disk), as in GroupCommitNonces.
type FileNonces struct {
	dir        string
	durability Durability
	span       time.Duration
	logger     *slog.Logger
	now        func() time.Time
	dirFile    *os.File // holds the directory's lock

	mu      sync.Mutex
	live    map[memNonce]time.Time // → expiresAt; only claims whose records are written
	pending []*fileClaim
	leading bool
	segs    []*segment // every segment on disk, oldest first
	nextSeq uint64
	closed  bool

	sync    func(*os.File) error // (*os.File).Sync; tests make it fail
	writeMu sync.Mutex           // held by the leader while it writes, and by Close
	cur     *segment             // the segment appended to; nil after a failed write. Leader only.
	buf     []byte               // the group's records. Leader only.
	inGroup map[memNonce]struct{}
}

// FileNoncesOptions configure OpenFileNonces; the zero value works.
type FileNoncesOptions struct {
	Durability  Durability       // "": DurabilityFull
	SegmentSpan time.Duration    // how long a segment is appended to; 0: DefaultMaxSkew
	Logger      *slog.Logger     // replay repairs, abandoned segments; nil: discard
	Now         func() time.Time // the clock of segment rotation and of replay; nil: time.Now
}

type segment struct {
	seq       uint64
	file      *os.File  // open while it is the current segment
	opened    time.Time // when it became the current segment (zero for a replayed one)
	maxExpiry time.Time // the latest expiresAt of its written records
	current   bool
}

type fileClaim struct {
	keyID, nonce   string
	expiresAt, now time.Time

	ok    bool
	err   error
	write bool          // its record is in the group's write
	dup   bool          // another claim of its group writes the same nonce
	lead  bool          // set before done is closed: the claim leads the next write
	done  chan struct{} // closed when ok/err are set, or lead
}

var (
	_ NonceStore        = (*FileNonces)(nil)
	_ NoncePurger       = (*FileNonces)(nil)
	_ DurableNonceStore = (*FileNonces)(nil)
)

// ErrNoncesClosed is the error of a claim on a closed FileNonces.
var ErrNoncesClosed = errors.New("nonce journal closed")

// OpenFileNonces opens the nonce journal in dir (created 0700 when missing), locks it, replays
// its segments and starts a new one. A directory locked by another process (another kernel on the
// same data directory) is an error.
func OpenFileNonces(dir string, opts FileNoncesOptions) (*FileNonces, error) {
	if opts.Durability == "" {
		opts.Durability = DurabilityFull
	}
	if !opts.Durability.Valid() {
		return nil, fmt.Errorf("open nonce journal: unknown durability %q", opts.Durability)
	}
	if opts.SegmentSpan < 0 {
		return nil, errors.New("open nonce journal: negative segment span")
	}
	if opts.SegmentSpan == 0 {
		opts.SegmentSpan = DefaultMaxSkew
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open nonce journal: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open nonce journal: %w", err)
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		d.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open nonce journal: %s is locked by another process: one kernel per data directory", dir)
		}
		return nil, fmt.Errorf("open nonce journal: lock %s: %w", dir, err)
	}
	f := &FileNonces{
		dir: dir, durability: opts.Durability, span: opts.SegmentSpan, logger: opts.Logger, now: opts.Now, dirFile: d,
		live: map[memNonce]time.Time{}, inGroup: map[memNonce]struct{}{}, sync: (*os.File).Sync, nextSeq: 1,
	}
	if err := f.replay(); err != nil {
		f.unlock()
		return nil, fmt.Errorf("open nonce journal %s: %w", dir, err)
	}
	if err := f.rotate(); err != nil {
		f.unlock()
		return nil, fmt.Errorf("open nonce journal %s: %w", dir, err)
	}
	return f, nil
}

// Durability returns what an accepted claim survives.
func (f *FileNonces) Durability() Durability { return f.durability }

// segName is the file name of segment seq; parseSegName its inverse.
func segName(seq uint64) string { return fmt.Sprintf("segment-%020d.log", seq) }

func parseSegName(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, "segment-")
	if !ok {
		return 0, false
	}
	if s, ok = strings.CutSuffix(s, ".log"); !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || segName(seq) != name {
		return 0, false
	}
	return seq, true
}

func (f *FileNonces) segPath(seq uint64) string { return filepath.Join(f.dir, segName(seq)) }

// replay loads the live records of every segment, truncates each to its good prefix, and deletes
// the segments with no live record.
func (f *FileNonces) replay() error {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return err
	}
	now := f.now()
	var seqs []uint64
	for _, e := range entries {
		if seq, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	var dead []uint64
	for _, seq := range seqs {
		s, err := f.replayOne(seq, now)
		if err != nil {
			return err
		}
		f.nextSeq = seq + 1
		if s.maxExpiry.After(now) {
			f.segs = append(f.segs, s)
		} else {
			dead = append(dead, seq)
		}
	}
	return f.remove(dead)
}

func (f *FileNonces) replayOne(seq uint64, now time.Time) (*segment, error) {
	path := f.segPath(seq)
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", segName(seq), err)
	}
	defer file.Close()
	s := &segment{seq: seq}
	good, bad, err := replaySegment(file, func(r journalRecord) {
		if r.expiresAt.After(s.maxExpiry) {
			s.maxExpiry = r.expiresAt
		}
		if !r.expiresAt.After(now) {
			return
		}
		k := memNonce{r.keyID, r.nonce}
		if r.expiresAt.After(f.live[k]) {
			f.live[k] = r.expiresAt
		}
	})
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", segName(seq), err)
	}
	if bad {
		st, err := file.Stat()
		if err != nil {
			return nil, fmt.Errorf("replay %s: %w", segName(seq), err)
		}
		f.logger.Warn("nonce journal: torn or corrupt record, the rest of the segment is dropped",
			"segment", path, "good_bytes", good, "dropped_bytes", st.Size()-good)
		if err := file.Truncate(good); err != nil {
			return nil, fmt.Errorf("replay %s: truncate to its good prefix: %w", segName(seq), err)
		}
		if err := file.Sync(); err != nil {
			return nil, fmt.Errorf("replay %s: %w", segName(seq), err)
		}
	}
	return s, nil
}

// rotate makes a new segment the current one (the previous one, if any, is closed). The new
// file's header and directory entry are synced under DurabilityFull, so the records synced in
// it later are found after a power loss. Leader or OpenFileNonces only.
func (f *FileNonces) rotate() error {
	f.dropCurrent()
	f.mu.Lock()
	seq := f.nextSeq
	f.nextSeq++
	f.mu.Unlock()
	file, err := os.OpenFile(f.segPath(seq), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("new segment: %w", err)
	}
	fail := func(err error) error {
		file.Close()
		_ = os.Remove(f.segPath(seq))
		return fmt.Errorf("new segment %s: %w", segName(seq), err)
	}
	if _, err := file.WriteString(segMagic); err != nil {
		return fail(err)
	}
	if f.durability == DurabilityFull {
		if err := file.Sync(); err != nil {
			return fail(err)
		}
		if err := f.dirFile.Sync(); err != nil {
			return fail(err)
		}
	}
	s := &segment{seq: seq, file: file, opened: f.now(), current: true}
	f.mu.Lock()
	f.segs = append(f.segs, s)
	f.mu.Unlock()
	f.cur = s
	return nil
}

// dropCurrent closes the current segment, which stays on disk until its records die.
func (f *FileNonces) dropCurrent() {
	if f.cur == nil {
		return
	}
	if err := f.cur.file.Close(); err != nil {
		f.logger.Warn("nonce journal: close segment", "segment", f.segPath(f.cur.seq), "error", err)
	}
	f.mu.Lock()
	f.cur.current, f.cur.file = false, nil
	f.mu.Unlock()
	f.cur = nil
}

// ClaimNonce records nonce for keyID until expiresAt and reports true once its record is in the
// journal (see NonceStore and FileNonces), unless a record of it is live at now.
func (f *FileNonces) ClaimNonce(_ context.Context, keyID, nonce string, expiresAt, now time.Time) (bool, error) {
	if len(keyID) > recMaxKeyLen || len(nonce) > recMaxNonceLn {
		return false, fmt.Errorf("claim nonce: key id of %d bytes or nonce of %d bytes too long for the journal", len(keyID), len(nonce))
	}
	k := memNonce{keyID, nonce}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return false, ErrNoncesClosed
	}
	if until, ok := f.live[k]; ok && until.After(now) {
		f.mu.Unlock()
		return false, nil
	}
	c := &fileClaim{keyID: keyID, nonce: nonce, expiresAt: expiresAt, now: now, done: make(chan struct{})}
	f.pending = append(f.pending, c)
	if f.leading {
		f.mu.Unlock()
		<-c.done
		if !c.lead {
			return c.ok, c.err
		}
	} else {
		f.leading = true
		f.mu.Unlock()
	}
	// c leads: write what is pending (c among it), then pass the lead on.
	f.mu.Lock()
	n := min(len(f.pending), MaxGroupCommit)
	batch := f.pending[:n:n]
	f.pending = f.pending[n:]
	f.mu.Unlock()

	f.commit(batch)
	for _, b := range batch {
		if b != c {
			close(b.done)
		}
	}

	f.mu.Lock()
	if len(f.pending) > 0 {
		next := f.pending[0]
		next.lead = true
		close(next.done)
	} else {
		f.leading = false
		f.pending = nil
	}
	f.mu.Unlock()
	return c.ok, c.err
}

// commit writes the records of batch's new claims in one write (and sync) and records each
// claim's result. Claims of nonces live in memory report false without a write; of claims of one
// nonce in batch, the first writes and the others report false once it is written.
func (f *FileNonces) commit(batch []*fileClaim) {
	f.writeMu.Lock()
	defer f.writeMu.Unlock()

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		for _, c := range batch {
			c.err = ErrNoncesClosed
		}
		return
	}
	buf := f.buf[:0]
	clear(f.inGroup)
	for _, c := range batch {
		k := memNonce{c.keyID, c.nonce}
		if until, ok := f.live[k]; ok && until.After(c.now) {
			continue // written by an earlier group
		}
		if _, ok := f.inGroup[k]; ok {
			c.dup = true
			continue
		}
		f.inGroup[k] = struct{}{}
		c.write = true
		buf = appendRecord(buf, c.keyID, c.nonce, c.expiresAt)
	}
	f.mu.Unlock()
	f.buf = buf
	if len(buf) == 0 {
		return
	}

	err := f.append(buf)

	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("write %d nonce claims to the journal: %w", len(f.inGroup), err)
		for _, c := range batch {
			if c.write || c.dup {
				c.err = err
			}
		}
		return
	}
	for _, c := range batch {
		if c.write {
			f.live[memNonce{c.keyID, c.nonce}] = c.expiresAt
			c.ok = true
			if c.expiresAt.After(f.cur.maxExpiry) {
				f.cur.maxExpiry = c.expiresAt
			}
		}
	}
}

// append writes buf to the current segment (a new one when there is none or the current one is
// older than the span) and syncs it under DurabilityFull. On a failed write or sync, the
// segment is abandoned: what it holds after its last good record is unknown. Leader only.
func (f *FileNonces) append(buf []byte) error {
	if f.cur == nil || f.now().Sub(f.cur.opened) >= f.span {
		if err := f.rotate(); err != nil {
			return err
		}
	}
	_, err := f.cur.file.Write(buf)
	if err == nil && f.durability == DurabilityFull {
		err = f.sync(f.cur.file)
	}
	if err != nil {
		f.logger.Error("nonce journal: write failed, the segment is abandoned", "segment", f.segPath(f.cur.seq), "error", err)
		f.dropCurrent()
		return err
	}
	return nil
}

// PurgeNonces forgets the nonces whose records expire at or before before, deletes the segments
// all of whose records do (but the current one), and returns how many nonces it forgot.
func (f *FileNonces) PurgeNonces(_ context.Context, before time.Time) (int64, error) {
	f.mu.Lock()
	var n int64
	for k, until := range f.live {
		if !until.After(before) {
			delete(f.live, k)
			n++
		}
	}
	var dead []uint64
	f.segs = slices.DeleteFunc(f.segs, func(s *segment) bool {
		if s.current || s.maxExpiry.After(before) {
			return false
		}
		dead = append(dead, s.seq)
		return true
	})
	f.mu.Unlock()
	if err := f.remove(dead); err != nil {
		return n, fmt.Errorf("purge nonce journal: %w", err)
	}
	return n, nil
}

// remove deletes the segments seqs, whose records are all dead.
func (f *FileNonces) remove(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	var errsList []error
	for _, seq := range seqs {
		if err := os.Remove(f.segPath(seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errsList = append(errsList, fmt.Errorf("delete segment: %w", err))
		}
	}
	return errors.Join(errsList...)
}

// Close waits for the write in progress, closes the current segment and releases the
// directory's lock; later claims fail with ErrNoncesClosed. Safe to call more than once.
func (f *FileNonces) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	var err error
	if f.cur != nil {
		err = f.cur.file.Close()
		f.cur = nil
	}
	f.unlock()
	if err != nil {
		return fmt.Errorf("close nonce journal: %w", err)
	}
	return nil
}

func (f *FileNonces) unlock() {
	_ = syscall.Flock(int(f.dirFile.Fd()), syscall.LOCK_UN)
	f.dirFile.Close()
}
