// Command nops is the NOPS Kernel binary: `nops server` runs the kernel; the other subcommands
// administer it (`migrate`, `config print`, `version`). Configuration comes from a YAML file
// (--config / NOPS_CONFIG), then NOPS_* environment variables, then flags, in increasing
// precedence; see `nops config print` and the README's table.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv, notifySignals))
}

// notifySignals delivers SIGINT and SIGTERM to c.
func notifySignals(c chan<- os.Signal) func() {
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	return func() { signal.Stop(c) }
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) (string, bool), signals func(chan<- os.Signal) func()) int {
	root := newRootCmd(env, signals)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "nops: %v\n", err)
		return 1
	}
	return 0
}
