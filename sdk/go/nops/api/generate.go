// Package api is the typed client and the models of the NOPS kernel API, generated from
// api/kernel.yaml by oapi-codegen. Do not edit client.gen.go; change the spec and run
// `go generate .` here. Most programs use it through nops.Client, which adds authentication,
// request signing and retries (see nops.Client.API).
package api

//go:generate go tool oapi-codegen -config cfg.yaml ../../../../api/kernel.yaml
