package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/nops-kernel/nops/internal/errs"
)

// Upcasting
//
// A breaking change to a payload makes a new version of its type: nops.agent.registered.v2 after
// v1. The kernel then emits only the newest version, but events of the older one live on — in
// outboxes, streams, the DLQ, replay files — and kernels of the previous release keep emitting
// them during a rolling upgrade. An upcaster turns the data of version N into the data of N+1;
// chained, the upcasters bring an event of any older version to the newest, so a consumer is
// written against the newest payload only. Event.Payload applies the kernel's upcasters
// (kernelUpcasts) before decoding, and Parse applies them to check an old event as strictly as a
// current one; the envelope Parse returns is the event as it was produced (its id, type and
// dataschema are what the bus routed and deduplicated it by), and Event.Upcast returns it at the
// newest version.
//
// To version a type: add the new constant (…v2) to the catalogue in place of the old one, its
// payload struct and schema file; keep the old schema file (api/events/<type>.v1.json), so inbound
// events of the old version still validate; and add the v1 → v2 upcaster to kernelUpcasts.

// UpcastFunc returns the data of e, an event of some version N of its type, as the data of
// version N+1. It may read e's attributes (time, subject, tenant) to fill what version N+1 has
// and version N lacked. An error means e cannot be expressed in the newer version.
type UpcastFunc func(e Event) (json.RawMessage, error)

// Upcasters chains the upcasters of event types, one per type version (vN → vN+1). The zero
// value is not usable; NewUpcasters makes one. Register before use: after the last Register, an
// Upcasters is safe for concurrent use.
type Upcasters struct {
	steps map[Type]upcastStep
}

type upcastStep struct {
	to Type
	fn UpcastFunc
}

// NewUpcasters returns an empty chain.
func NewUpcasters() *Upcasters { return &Upcasters{steps: map[Type]upcastStep{}} }

// kernelUpcasts are the upcasters of the kernel's own types, one per version it no longer emits.
// None yet: every catalogue type is at its first version.
var kernelUpcasts = []struct {
	from Type
	fn   UpcastFunc
}{}

// kernelUpcasters is the chain of kernelUpcasts, built once; TestKernelUpcasters checks it.
var kernelUpcasters = func() *Upcasters {
	u := NewUpcasters()
	for _, s := range kernelUpcasts {
		if err := u.Register(s.from, s.fn); err != nil {
			panic(err) // a static table: TestKernelUpcasters fails first
		}
	}
	return u
}()

// Register adds the upcaster of type from (version N) to version N+1 of the same type. A type
// has at most one upcaster.
func (u *Upcasters) Register(from Type, fn UpcastFunc) error {
	to, ok := NextVersion(from)
	if !ok {
		return fmt.Errorf("upcaster of %q: not a valid event type", from)
	}
	return u.add(from, to, fn)
}

// add registers fn from one type to another without checking that to is from's next version.
func (u *Upcasters) add(from, to Type, fn UpcastFunc) error {
	if fn == nil {
		return fmt.Errorf("upcaster of %s: nil function", from)
	}
	if _, dup := u.steps[from]; dup {
		return fmt.Errorf("upcaster of %s registered twice", from)
	}
	u.steps[from] = upcastStep{to: to, fn: fn}
	return nil
}

// NextVersion returns the type of the version after t's: "nops.agent.registered.v2" for
// "nops.agent.registered.v1". ok is false when t is not a valid type.
func NextVersion(t Type) (next Type, ok bool) {
	if !t.Valid() {
		return "", false
	}
	i := strings.LastIndex(string(t), ".v")
	n, err := strconv.Atoi(string(t)[i+2:])
	if err != nil {
		return "", false
	}
	next = Type(string(t)[:i+2] + strconv.Itoa(n+1))
	if !next.Valid() {
		return "", false // past the nine digits a version may have
	}
	return next, true
}

// Latest returns the type events of type t are upcast to: t itself when no upcaster starts at it.
func (u *Upcasters) Latest(t Type) Type {
	for range len(u.steps) + 1 { // each step raises the version: no chain is longer than the steps
		s, ok := u.steps[t]
		if !ok {
			break
		}
		t = s.to
	}
	return t
}

// Upcast returns e brought to the newest version of its type: type, dataschema and data are
// those of that version, every other attribute is e's. An event of the newest version is returned
// as is. The data each upcaster returns must be a JSON object; the payload of the result is not
// decoded here (Event.Payload does it for catalogue types). Errors are errs.Invalid naming data.
func (u *Upcasters) Upcast(e Event) (Event, error) {
	for range len(u.steps) {
		s, ok := u.steps[e.Type]
		if !ok {
			break
		}
		data, err := s.fn(e)
		if err != nil {
			return Event{}, upcastError(e.Type, s.to, err)
		}
		if err := checkDataObject(data); err != nil {
			return Event{}, upcastError(e.Type, s.to, err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, data); err != nil {
			return Event{}, upcastError(e.Type, s.to, err)
		}
		e.Type, e.DataSchema, e.Data = s.to, DataSchemaURI(s.to), compact.Bytes()
	}
	return e, nil
}

func upcastError(from, to Type, err error) error {
	return &errs.Error{
		Code:    errs.Invalid,
		Message: "invalid input",
		Fields:  []errs.FieldError{{Name: "data", Reason: "cannot be upcast from " + string(from) + " to " + string(to)}},
		Err:     err,
	}
}

// Upcast returns e at the newest version of its type by the kernel's upcasters, with its payload
// checked: a consumer that needs the newest envelope (its type, dataschema and data), not only
// the payload Event.Payload already upcasts, reads this.
func (e Event) Upcast() (Event, error) {
	if err := e.validateEnvelope(); err != nil {
		return Event{}, err
	}
	up, err := kernelUpcasters.Upcast(e)
	if err != nil {
		return Event{}, err
	}
	if _, err := up.payload(); err != nil { // up is at its newest version: no upcaster runs again
		return Event{}, err
	}
	return up, nil
}
