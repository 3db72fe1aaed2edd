package reqsig

// The on-disk format of FileNonces' journal segments, and their replay.
//
// A segment is segMagic followed by records, each:
//
//	crc   uint32, little endian: CRC-32C (Castagnoli) of len and body
//	len   uint16, little endian: the body's length
//	body  expiresAt int64 (Unix nanoseconds, little endian), keyLen uint8, keyID, nonce
//
// A crash in the middle of an append leaves a torn record at the end of the segment; a disk
// fault may damage one anywhere. Replay stops at the first record that is incomplete or whose
// checksum does not match: the records after it are ignored.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"time"
)

// segMagic starts every segment: the format and its version.
const segMagic = "nopsnj1\n"

const (
	recHeaderLen  = 6 // crc, len
	recMinBody    = 9 // expiresAt, keyLen
	recMaxBody    = math.MaxUint16
	recMaxKeyLen  = math.MaxUint8
	recMaxNonceLn = recMaxBody - recMinBody - recMaxKeyLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord marks the end of a segment's good prefix: a torn or corrupt record.
var errBadRecord = errors.New("torn or corrupt nonce record")

// journalRecord is one claimed nonce as the journal holds it.
type journalRecord struct {
	keyID, nonce string
	expiresAt    time.Time
}

// appendRecord appends the encoding of (keyID, nonce, expiresAt) to b. The caller bounds the
// lengths (recMaxKeyLen, recMaxNonceLn).
func appendRecord(b []byte, keyID, nonce string, expiresAt time.Time) []byte {
	body := recMinBody + len(keyID) + len(nonce)
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, 0) // crc, set below
	b = binary.LittleEndian.AppendUint16(b, uint16(body))
	b = binary.LittleEndian.AppendUint64(b, uint64(expiresAt.UnixNano()))
	b = append(b, byte(len(keyID)))
	b = append(b, keyID...)
	b = append(b, nonce...)
	binary.LittleEndian.PutUint32(b[start:], crc32.Checksum(b[start+4:], castagnoli))
	return b
}

// decodeRecord decodes the record at the start of b: the record and its encoded length, or
// errBadRecord when b does not start with a whole record whose checksum matches.
func decodeRecord(b []byte) (journalRecord, int, error) {
	if len(b) < recHeaderLen {
		return journalRecord{}, 0, errBadRecord
	}
	n := int(binary.LittleEndian.Uint16(b[4:]))
	if n < recMinBody || len(b) < recHeaderLen+n {
		return journalRecord{}, 0, errBadRecord
	}
	if crc32.Checksum(b[4:recHeaderLen+n], castagnoli) != binary.LittleEndian.Uint32(b) {
		return journalRecord{}, 0, errBadRecord
	}
	body := b[recHeaderLen : recHeaderLen+n]
	k := int(body[8])
	if recMinBody+k > n {
		return journalRecord{}, 0, errBadRecord
	}
	return journalRecord{
		expiresAt: time.Unix(0, int64(binary.LittleEndian.Uint64(body))),
		keyID:     string(body[recMinBody : recMinBody+k]),
		nonce:     string(body[recMinBody+k:]),
	}, recHeaderLen + n, nil
}

// replaySegment reads a segment from r, calling fn with each good record, and returns the length
// of its good prefix (header included; 0 when even the header is torn) and whether a bad record
// or a torn header ends it before the end of r. A whole header that is not segMagic is an
// error: the file is not a segment. Read failures are errors.
func replaySegment(r io.Reader, fn func(journalRecord)) (good int64, bad bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head := make([]byte, len(segMagic))
	switch n, err := io.ReadFull(br, head); {
	case err == nil:
		if string(head) != segMagic {
			return 0, false, fmt.Errorf("not a nonce journal segment (header %q)", head)
		}
	case errors.Is(err, io.EOF):
		return 0, false, nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		if string(head[:n]) != segMagic[:n] {
			return 0, false, fmt.Errorf("not a nonce journal segment (header %q)", head[:n])
		}
		return 0, true, nil
	default:
		return 0, false, err
	}
	good = int64(len(segMagic))
	buf := make([]byte, recHeaderLen+recMaxBody)
	for {
		if _, err := io.ReadFull(br, buf[:recHeaderLen]); err != nil {
			if errors.Is(err, io.EOF) {
				return good, false, nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return good, true, nil
			}
			return good, false, err
		}
		n := int(binary.LittleEndian.Uint16(buf[4:]))
		if n < recMinBody {
			return good, true, nil
		}
		if _, err := io.ReadFull(br, buf[recHeaderLen:recHeaderLen+n]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return good, true, nil
			}
			return good, false, err
		}
		rec, size, err := decodeRecord(buf[:recHeaderLen+n])
		if err != nil {
			return good, true, nil
		}
		fn(rec)
		good += int64(size)
	}
}
