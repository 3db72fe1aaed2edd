package netguard

import (
	"fmt"
	"net/http"
	"time"
)

// Defaults of TimeoutConfig.
const (
	// DefaultReadHeaderTimeout: a client sends its request line and headers within 5 s or is cut
	// (slowloris). Honest clients send them in one packet.
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout bounds reading a whole request, body included: 30 s carries the body
	// cap (1 MiB by default) over a slow mobile link.
	DefaultReadTimeout = 30 * time.Second
	// DefaultIdleTimeout closes keep-alive connections idle that long.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultMaxHeaderBytes caps the request line and headers.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConcurrentStreams caps the requests in flight on one HTTP/2 connection.
	DefaultMaxConcurrentStreams = 100
)

// TimeoutConfig chooses the http.Server limits. Zero values take the defaults.
type TimeoutConfig struct {
	ReadHeaderTimeout    time.Duration
	ReadTimeout          time.Duration
	IdleTimeout          time.Duration
	MaxHeaderBytes       int
	MaxConcurrentStreams int
}

// Timeouts are the http.Server settings RecommendedTimeouts chose.
type Timeouts struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	// WriteTimeout is always 0: a deadline for the whole response would cut streaming
	// responses. Slow readers are cut by the Listener's WriteStallTimeout instead, and a handler
	// needing a whole-response deadline sets it with http.ResponseController.
	WriteTimeout         time.Duration
	IdleTimeout          time.Duration
	MaxHeaderBytes       int
	MaxConcurrentStreams int
}

// RecommendedTimeouts returns the server settings for cfg, defaults filled in. It returns an error
// for negative values and for a ReadTimeout shorter than ReadHeaderTimeout (the header timeout
// would never apply).
func RecommendedTimeouts(cfg TimeoutConfig) (Timeouts, error) {
	if cfg.ReadHeaderTimeout < 0 || cfg.ReadTimeout < 0 || cfg.IdleTimeout < 0 || cfg.MaxHeaderBytes < 0 || cfg.MaxConcurrentStreams < 0 {
		return Timeouts{}, fmt.Errorf("netguard: server timeouts and limits must not be negative: %+v", cfg)
	}
	t := Timeouts{
		ReadHeaderTimeout:    orDefault(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:          orDefault(cfg.ReadTimeout, DefaultReadTimeout),
		IdleTimeout:          orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:       orDefault(cfg.MaxHeaderBytes, DefaultMaxHeaderBytes),
		MaxConcurrentStreams: orDefault(cfg.MaxConcurrentStreams, DefaultMaxConcurrentStreams),
	}
	if t.ReadTimeout < t.ReadHeaderTimeout {
		return Timeouts{}, fmt.Errorf("netguard: read timeout %s is shorter than the read header timeout %s", t.ReadTimeout, t.ReadHeaderTimeout)
	}
	return t, nil
}

func orDefault[T time.Duration | int](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Apply sets the timeouts and limits on srv (its HTTP2 settings are created when nil).
func (t Timeouts) Apply(srv *http.Server) {
	srv.ReadHeaderTimeout = t.ReadHeaderTimeout
	srv.ReadTimeout = t.ReadTimeout
	srv.WriteTimeout = t.WriteTimeout
	srv.IdleTimeout = t.IdleTimeout
	srv.MaxHeaderBytes = t.MaxHeaderBytes
	if srv.HTTP2 == nil {
		srv.HTTP2 = &http.HTTP2Config{}
	}
	srv.HTTP2.MaxConcurrentStreams = t.MaxConcurrentStreams
}
