// Package flags is the kernel's feature flags: boolean and variant flags that are global kernel
// objects (managed by SUPER_ADMIN) with ordered, per-tenant targeting rules written in CEL.
//
// A Flag has a key, a type (boolean, whose variants are "true" and "false", or variant, with up to
// MaxVariants named string variants), a default variant, an enabled switch and ordered rules
// {expression → variant}. Evaluating a flag for a tenant returns the variant of the first rule
// whose expression is true (reason TARGETING_MATCH), else the default variant (DEFAULT); a
// disabled flag answers its default variant with reason DISABLED.
//
// # Usage
//
// Service validates and persists flags (internal/control calls it inside the transaction of the
// audit record and the nops.flag.changed.v1 event). Evaluator keeps every flag compiled in memory
// and answers evaluations without I/O; it reloads from the store when Notify is called (the
// kernel calls it on this replica's own writes and on every nops.flag.changed.v1 event from the
// bus) and every refresh interval in any case, so a change reaches every replica within about a
// second while the bus works, and within the refresh interval when it does not. Provider exposes
// the Evaluator as an OpenFeature provider (open-feature/go-sdk): kernel code and add-ons use the
// standard client API, with the tenant id as the targeting key.
//
// # Concurrency
//
// Service, Evaluator and Provider are safe for concurrent use. The Evaluator swaps an immutable
// snapshot under an atomic pointer; evaluations never block on a reload.
//
// Imported by internal/control, internal/httpapi, internal/kernel and the storage adapters; it
// imports no adapter.
package flags
