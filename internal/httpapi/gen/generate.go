// Package gen holds the server interface and models generated from api/kernel.yaml by
// oapi-codegen. Do not edit kernel.gen.go; change the spec and run `go generate ./...`.
// Only internal/httpapi imports gen.
package gen

//go:generate go tool oapi-codegen -config cfg.yaml ../../../api/kernel.yaml
