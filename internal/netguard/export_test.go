package netguard

import "net"

// KeyOf exposes the grouping of peer addresses to the tests.
func (l *Listener) KeyOf(a net.Addr) (string, bool) {
	p, ok := l.keyOf(a)
	if !ok {
		return "", false
	}
	return p.String(), true
}
