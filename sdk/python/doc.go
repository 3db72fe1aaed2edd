// Package pythonsdk holds the Go test harness of the Python agent SDK (the nops_sdk package in
// this directory, standard library only) and of examples/python-agent. The harness starts a real
// kernel in-process (internal/kernel/kerneltest), creates a tenant and the credentials the Python
// tests need, runs `python3 -m unittest discover -v` here against it, and fails with the Python
// output when a Python test fails; it then runs the example agent and invokes it through the
// kernel. Without python3 the tests skip, or fail when NOPS_TEST_REQUIRE_SERVICES=1 (as in CI).
// The package has no Go code of its own.
package pythonsdk
