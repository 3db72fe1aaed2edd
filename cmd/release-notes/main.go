// Command release-notes prints the release notes of the kernel as Markdown (`make
// release-notes`): the changes of the HTTP API between api/baseline/kernel.yaml (the released
// document) and api/kernel.yaml, and the commits since the last tag — or, without one, since the
// baseline last changed — grouped by issue and area. Run it from the repository's root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/nops-kernel/nops/internal/apicompat"
	"github.com/nops-kernel/nops/internal/releasenotes"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "release-notes:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	baseline := flag.String("baseline", "api/baseline/kernel.yaml", "the released OpenAPI document")
	spec := flag.String("spec", "api/kernel.yaml", "the current OpenAPI document")
	since := flag.String("since", "", "list the commits after this revision (default: the last tag, else the baseline's last change)")
	flag.Parse()
	base, err := os.ReadFile(*baseline)
	if err != nil {
		return err
	}
	rev, err := os.ReadFile(*spec)
	if err != nil {
		return err
	}
	var n releasenotes.Notes
	if n.BaseVersion, n.Version, n.API, err = apicompat.Changelog(base, rev); err != nil {
		return err
	}
	n.Since = *since
	if n.Since == "" {
		if n.Since, err = releasenotes.Since(ctx, ".", *baseline); err != nil {
			return err
		}
	}
	if n.Commits, err = releasenotes.Log(ctx, ".", n.Since); err != nil {
		return err
	}
	return releasenotes.Write(os.Stdout, n)
}
