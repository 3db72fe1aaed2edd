// Package e2e holds whole-system tests: real kernels started through internal/kernel on
// 127.0.0.1:0, talked to over HTTP with a client that validates the live contract, with
// dependency outages injected by a fault proxy. Nothing imports it.
package e2e
