package redisbus

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/bus"
)

// FuzzDecodeMessage: decoding an entry never panics, whatever its meta field holds (Redis is
// shared; anything with access to it can write the stream); an entry it accepts has an id, a
// tenant and a type, and a StoredAt in the entry id's millisecond; and what encodeMeta wrote
// for a valid message reads back as that message.
func FuzzDecodeMessage(f *testing.F) {
	f.Add("1764169200123456\nten_a\nnops.test.alpha.v1\n\nevt-1", "1764169200123-0", "ten_a", "nops.test.alpha.v1", "evt-1", "")
	f.Add("1764169200123456\nten_a\nnops.test.alpha.v1\n00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nid\nwith\nnewlines", "1764169200123-7", "t", "nops.a.b.v2", "a\nb", "00-x")
	f.Add("\n\n\n\n", "0-0", "", "", "", "")
	f.Add("x", "bad", "ten", "nops.a.b.v1", "i", "")
	f.Fuzz(func(t *testing.T, meta, entryID, tenant, typ, id, tp string) {
		m, at, err := decodeMessage(entryID, map[string]any{"meta": meta, "data": "{}"})
		if err == nil {
			if m.ID == "" || m.Tenant == "" || m.Type == "" {
				t.Fatalf("accepted %q without id, tenant or type: %+v", meta, m)
			}
			if validEntryID(entryID) {
				if ms := entryTime(entryID); at.Before(ms) || !at.Before(ms.Add(time.Millisecond)) {
					t.Fatalf("StoredAt %s outside entry %s's millisecond", at, entryID)
				}
			}
		}
		want := bus.Message{ID: id, Tenant: tenant, Type: typ, TraceParent: tp, Payload: []byte("{}")}
		if want.Validate() != nil || strings.Contains(tp, "\n") {
			return
		}
		got, _, err := decodeMessage("1764169200123-0", map[string]any{"meta": "1764169200123456\n" + encodeMeta(want), "data": "{}"})
		if err != nil {
			t.Fatalf("decode of encodeMeta(%+v): %v", want, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	})
}
