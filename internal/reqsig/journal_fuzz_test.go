package reqsig

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// FuzzNonceJournal feeds arbitrary bytes to the segment replay: it never panics, its good prefix
// is exactly the re-encoding of the records it returned (nothing is taken from past the first
// bad record), and a segment it calls whole is whole.
func FuzzNonceJournal(f *testing.F) {
	until := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	seg := []byte(segMagic)
	seg = appendRecord(seg, "rk_01jq3v6y7m9k2x8p4t5w0zcd1h", "q3Jx0dQvXb2yR7mLkP9sEw", until)
	seg = appendRecord(seg, "rk", "", until.Add(time.Hour))
	f.Add(seg)
	f.Add(seg[:len(seg)-3])
	f.Add([]byte(segMagic[:3]))
	f.Add([]byte{})
	bad := bytes.Clone(seg)
	bad[len(segMagic)+7] ^= 1
	f.Add(bad)
	f.Fuzz(func(t *testing.T, data []byte) {
		var recs []journalRecord
		good, torn, err := replaySegment(bytes.NewReader(data), func(r journalRecord) { recs = append(recs, r) })
		if err != nil {
			if good != 0 || len(recs) != 0 || !strings.Contains(err.Error(), "not a nonce journal segment") {
				t.Fatalf("error %v after %d good bytes and %d records", err, good, len(recs))
			}
			return
		}
		if good > int64(len(data)) {
			t.Fatalf("good prefix %d longer than the %d bytes", good, len(data))
		}
		if !torn && good != int64(len(data)) {
			t.Fatalf("whole segment, but only %d of %d bytes good", good, len(data))
		}
		if good == 0 {
			if len(recs) != 0 {
				t.Fatal("records without a header")
			}
			return
		}
		again := []byte(segMagic)
		for _, r := range recs {
			if len(r.keyID) > recMaxKeyLen {
				t.Fatalf("key id of %d bytes", len(r.keyID))
			}
			again = appendRecord(again, r.keyID, r.nonce, r.expiresAt)
		}
		if !bytes.Equal(again, data[:good]) {
			t.Fatalf("good prefix %x is not the records' encoding %x", data[:good], again)
		}
		// Each record decodes alone to itself.
		off := len(segMagic)
		for _, r := range recs {
			got, n, err := decodeRecord(data[off:good])
			if err != nil || got != r {
				t.Fatalf("decodeRecord at %d: %+v %v, want %+v", off, got, err, r)
			}
			off += n
		}
	})
}
