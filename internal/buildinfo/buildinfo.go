// Package buildinfo tells which build of the kernel is running: the version set at link time by
// the Makefile (-X), falling back to the module version, and the VCS commit that the Go toolchain
// stamps into every binary built from a checkout. Imported by cmd/ and internal/kernel.
package buildinfo

import "runtime/debug"

// version and commit are set at link time by the Makefile:
// -ldflags "-X github.com/nops-kernel/nops/internal/buildinfo.version=v1.2.3 -X ….commit=abc123".
var version, commit string

// Version returns the kernel's version, "devel" when unknown.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// Commit returns the VCS revision the binary was built from (with "+dirty" when the tree had
// changes), "unknown" when not stamped (e.g. under go test).
func Commit() string {
	if commit != "" {
		return commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "unknown"
	}
	if modified == "true" {
		rev += "+dirty"
	}
	return rev
}
