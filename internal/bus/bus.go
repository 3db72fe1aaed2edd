// Package bus defines the kernel's event bus as the rest of the kernel sees it. Adapters live in
// subpackages (natsbus: JetStream embedded in the process or an external NATS). Domain packages
// import bus, never an adapter; only internal/kernel picks one.
package bus

import "context"

// Bus is the event bus. The event API (publish, durable consumers, DLQ) is added on top of this
// by the events work; the foundation needs only lifecycle and health.
type Bus interface {
	// Ping checks that the bus answers and that JetStream (or its equivalent) is usable.
	Ping(ctx context.Context) error
	// Close releases connections and, for an embedded bus, shuts its server down.
	Close() error
}
