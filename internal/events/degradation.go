package events

import (
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// The degraded modes a nops.degradation.changed.v1 event names (internal/degrade).
const (
	DegradeReadOnly       = "read_only"
	DegradeBusDown        = "bus_down"
	DegradeShedBestEffort = "shed_best_effort"
)

// The triggers of a degradation change.
const (
	DegradeTriggerAuto   = "auto"   // dependency health or load
	DegradeTriggerManual = "manual" // a feature flag (kernel.degrade.<mode>)
)

// The changes a nops.degradation.changed.v1 event reports.
const (
	DegradeEntered = "entered"
	DegradeLeft    = "left"
)

// DegradationSubject returns the subject of a mode's events: "degradation/<mode>".
func DegradationSubject(mode string) string { return "degradation/" + mode }

// DegradationChanged is the data of nops.degradation.changed.v1 (the brief's
// "kernel.degradation.changed"): one kernel replica entered or left a degraded mode. Modes are
// per replica, since what triggers them (a probe, the in-flight gate) is.
type DegradationChanged struct {
	Mode      string    `json:"mode"`    // DegradeReadOnly, DegradeBusDown or DegradeShedBestEffort
	Change    string    `json:"change"`  // DegradeEntered or DegradeLeft
	Trigger   string    `json:"trigger"` // DegradeTriggerAuto or DegradeTriggerManual
	Reason    string    `json:"reason"`  // printable ASCII, at most 256: why, without secrets
	Kernel    string    `json:"kernel"`  // the replica
	ChangedAt time.Time `json:"changed_at"`
}

// EventType implements Payload.
func (DegradationChanged) EventType() Type { return TypeDegradationChanged }

// EventTenant implements Payload: degradation is kernel-wide.
func (DegradationChanged) EventTenant() string { return KernelTenant }

// EventSubject implements Payload.
func (p DegradationChanged) EventSubject() string { return DegradationSubject(p.Mode) }

// Validate implements Payload; it checks what api/events/nops.degradation.changed.v1.json does.
func (p DegradationChanged) Validate() error {
	switch {
	case p.Mode != DegradeReadOnly && p.Mode != DegradeBusDown && p.Mode != DegradeShedBestEffort:
		return errs.Field("data.mode", "must be read_only, bus_down or shed_best_effort")
	case p.Change != DegradeEntered && p.Change != DegradeLeft:
		return errs.Field("data.change", "must be entered or left")
	case p.Trigger != DegradeTriggerAuto && p.Trigger != DegradeTriggerManual:
		return errs.Field("data.trigger", "must be auto or manual")
	case !asciiText(p.Reason, 256, true):
		return errs.Field("data.reason", "must be 1 to 256 printable ASCII characters")
	case !ValidKernelName(p.Kernel):
		return errs.Field("data.kernel", "must be 1 to 255 printable ASCII characters without spaces")
	}
	return checkTime("data.changed_at", p.ChangedAt)
}
