package nops

import "time"

// Hooks are metric callbacks. Each may be nil; each is called synchronously, so it must be
// quick (increment a counter, observe a histogram). They carry no credentials.
type Hooks struct {
	// OnHeartbeat is called after each heartbeat the agent sent.
	OnHeartbeat func(HeartbeatEvent)
	// OnInvocation is called when the agent's handler has answered an invocation.
	OnInvocation func(InvocationEvent)
	// OnRetry is called before the client retries a request.
	OnRetry func(RetryEvent)
	// OnKeyRotation is called after each automatic rotation of the agent's API key, done or
	// failed (see AgentConfig.DisableAutoRotate).
	OnKeyRotation func(KeyRotationEvent)
}

// KeyRotationEvent describes one automatic API key rotation.
type KeyRotationEvent struct {
	KeyID    string
	RotateBy time.Time     // the deadline the kernel announced
	Grace    time.Duration // the grace period asked for the previous secret
	// OldValidUntil is when the kernel stops accepting the previous secret (zero on error).
	OldValidUntil time.Time
	Duration      time.Duration
	Err           error
}

// HeartbeatEvent describes one heartbeat.
type HeartbeatEvent struct {
	AgentID  string
	InFlight int64
	Free     int64
	// P50, P95 and ErrorRate are the figures sent, over the last invocations served (zero
	// before the first).
	P50, P95  time.Duration
	ErrorRate float64
	Duration  time.Duration
	Status    string // the agent's status the kernel answered ("" on error)
	Err       error
}

// InvocationEvent describes one invocation served.
type InvocationEvent struct {
	Capability   string
	InvocationID string
	Tenant       string
	Status       int // the HTTP status answered
	Duration     time.Duration
}

// RetryEvent describes one retry.
type RetryEvent struct {
	Method  string
	Path    string
	Attempt int           // the attempt that failed (1 for the first)
	Reason  string        // "429", "503", "409" or "transport"
	Delay   time.Duration // the wait before the next attempt
}

func (h Hooks) heartbeat(e HeartbeatEvent) {
	if h.OnHeartbeat != nil {
		h.OnHeartbeat(e)
	}
}

func (h Hooks) invocation(e InvocationEvent) {
	if h.OnInvocation != nil {
		h.OnInvocation(e)
	}
}

func (h Hooks) retry(e RetryEvent) {
	if h.OnRetry != nil {
		h.OnRetry(e)
	}
}

func (h Hooks) keyRotation(e KeyRotationEvent) {
	if h.OnKeyRotation != nil {
		h.OnKeyRotation(e)
	}
}
