package bus

import "sync"

// Places counts the places of a subscription (see Queue): one per message fetched and not yet
// settled, running in a handler or queued for one. There are size places for the handlers and
// up to prefetch more for messages fetched ahead, which Places grants only while the handlers
// make progress: one more for each handler that finishes, all withdrawn when a hold interval
// passes without one finishing (hung handlers). So a subscription whose handlers hang fetches
// nothing beyond them, and what it would have fetched goes to the other members of its group.
//
// Concurrency: the methods may be called from any goroutine.
type Places struct {
	mu       sync.Mutex
	size     int
	prefetch int // most places beyond size
	extra    int // places beyond size granted now, ≤ prefetch
	used     int
	freed    chan struct{} // closed (and replaced) when places are given back while armed
	armed    bool          // freed was handed to a waiter since it was made
}

// NewPlaces returns size places for handlers and up to prefetch for fetching ahead.
func NewPlaces(size, prefetch int) *Places {
	return &Places{size: size, prefetch: prefetch, freed: make(chan struct{})}
}

func (p *Places) free() int { return p.size + p.extra - p.used }

// Take takes a place if one is free; otherwise it returns a channel closed when one may be.
func (p *Places) Take() (<-chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.free() > 0 {
		p.used++
		return nil, true
	}
	p.armed = true
	return p.freed, false
}

// TakeFree takes every free place, without waiting, and returns how many.
func (p *Places) TakeFree() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := max(p.free(), 0)
	p.used += n
	return n
}

// Wait waits until a place is free and, when take is set, takes every free place, returning
// how many. It reports false, taking nothing, once done is closed.
func (p *Places) Wait(done <-chan struct{}, take bool) (int, bool) {
	for {
		select {
		case <-done:
			return 0, false
		default:
		}
		p.mu.Lock()
		if free := p.free(); free > 0 {
			n := 0
			if take {
				n = free
				p.used += n
			}
			p.mu.Unlock()
			return n, true
		}
		freed := p.freed
		p.armed = true
		p.mu.Unlock()
		select {
		case <-freed:
		case <-done:
			return 0, false
		}
	}
}

// Release gives n places back.
func (p *Places) Release(n int) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used -= n
	p.signal()
}

// Finished gives back the place of a message whose handler finished, and grants one more place
// for fetching ahead.
func (p *Places) Finished() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used--
	p.extra = min(p.extra+1, p.prefetch)
	p.signal()
}

// Progress is told once per hold interval (Queue's Tick) whether a handler finished or none
// ran: without progress, fetching ahead stops until handlers finish again.
func (p *Places) Progress(ok bool) {
	if ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.extra = 0
}

// signal wakes whoever waits for a place. A new channel is made only when one was handed out
// since the last: places are given back once per message, and nobody waits most of the time.
func (p *Places) signal() {
	if !p.armed {
		return
	}
	close(p.freed)
	p.freed = make(chan struct{})
	p.armed = false
}
