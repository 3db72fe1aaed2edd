// Package middleware holds the kernel's HTTP perimeter: request ids, the route holder, panic
// recovery, security headers, body limits, access logs, metrics and tracing. Each is a
// func(http.Handler) http.Handler in its own file.
//
// Who may import it: internal/httpapi (which supplies the ErrorWriter and calls SetRoute) and
// internal/kernel (which chains them). It imports only internal/errs of the project.
//
// Middleware never formats an error body itself: it hands an *errs.Error to the ErrorWriter the
// caller injects, so every error of the API is rendered by the one RFC 9457 mapping.
//
// The kernel chains them, outermost first:
//
//	RequestID → WithRouteHolder → SecurityHeaders → Tracing → Metrics → Logging → Recover → BodyLimit → dispatcher
//
// so that the request id and security headers are on every response, the span covers the whole
// request, and a recovered panic is still measured and logged as a 500.
//
// Concurrency: the middleware values are stateless apart from their injected dependencies and
// serve requests concurrently. Per-request state (the route holder, response recorders) belongs to
// one request; the route holder alone is synchronised, because a handler may set it from a
// goroutine of its own.
package middleware
