package tlsconf

import "context"

// Poll runs one poll of Run, so tests can check what a poll does without waiting for a tick.
func (m *Manager) Poll(ctx context.Context) { m.poll(ctx) }
