// Package api embeds the kernel's OpenAPI document, api/kernel.yaml: the source of truth for the
// HTTP API, from which internal/httpapi/gen is generated. internal/httpapi loads it to enforce
// the contract at run time and to serve GET /openapi.json.
package api

import _ "embed"

// KernelYAML is api/kernel.yaml as written.
//
//go:embed kernel.yaml
var KernelYAML []byte
