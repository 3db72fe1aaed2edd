// Command buildgraph reads the action graph that `go build -debug-actiongraph=FILE` writes and
// says where a cold build's time goes: the CPU seconds of each compile and link (the slowest
// packages, and the sum per module), the longest chain of dependent actions in CPU seconds (what
// any number of CPUs would still wait for), and the build's wall time replayed on W idle CPUs
// with the go command's own scheduling order. The replay uses each action's CPU time, which
// barely depends on what else the machine runs, so builds measured on a busy shared machine can
// still be compared; the measured wall time of the same build is the real figure to quote next
// to it. It is a measuring tool for docs/benchmarks.md ("Cold build"), not part of the kernel.
//
// Usage:
//
//	GOCACHE=$(mktemp -d) go build -debug-actiongraph=/tmp/ag.json -o bin/ ./cmd/nops ./examples/echo-agent
//	go run ./bench/buildgraph -graph /tmp/ag.json -cpus 2 -top 15 ./cmd/nops ./examples/echo-agent
//
// The package arguments, when given, are passed to `go list -deps` to map packages to modules.
package main

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

func main() {
	graph := flag.String("graph", "", "the file written by go build -debug-actiongraph (required)")
	cpus := flag.Int("cpus", 2, "CPUs of the replayed idle machine")
	top := flag.Int("top", 15, "packages listed by CPU seconds")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *graph, *cpus, *top, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "buildgraph:", err)
		os.Exit(1)
	}
}

// action is the part of cmd/go's actionJSON this program reads. CmdUser and CmdSys are the
// nanoseconds of user and system CPU time of the action's commands (compile, link, cgo, asm).
type action struct {
	ID       int    `json:"ID"`
	Mode     string `json:"Mode"`
	Package  string `json:"Package"`
	Deps     []int  `json:"Deps"`
	Priority int    `json:"Priority"`
	CmdUser  int64  `json:"CmdUser"`
	CmdSys   int64  `json:"CmdSys"`
}

func (a *action) cpu() float64 { return float64(a.CmdUser+a.CmdSys) / 1e9 }

func (a *action) name() string {
	if a.Mode == "build" {
		return a.Package
	}
	return a.Package + " (" + a.Mode + ")"
}

func run(ctx context.Context, w io.Writer, graphFile string, cpus, top int, pkgs []string) error {
	if graphFile == "" {
		return errors.New("-graph is required")
	}
	if cpus < 1 {
		return fmt.Errorf("-cpus %d: want at least 1", cpus)
	}
	raw, err := os.ReadFile(graphFile)
	if err != nil {
		return fmt.Errorf("read action graph: %w", err)
	}
	acts, err := parseGraph(raw)
	if err != nil {
		return fmt.Errorf("parse action graph %s: %w", graphFile, err)
	}
	modules := map[string]string{}
	if len(pkgs) > 0 {
		if modules, err = listModules(ctx, pkgs); err != nil {
			return err
		}
	}

	var total float64
	var costly []*action
	for _, a := range acts {
		total += a.cpu()
		if a.cpu() > 0 {
			costly = append(costly, a)
		}
	}
	sort.Slice(costly, func(i, j int) bool { return costly[i].cpu() > costly[j].cpu() })
	fmt.Fprintf(w, "actions %d, CPU seconds %.1f (user+sys of every command), %.1f per CPU on %d CPUs\n\n",
		len(acts), total, total/float64(cpus), cpus)

	fmt.Fprintf(w, "| package | CPU s | share |\n|---|---|---|\n")
	for _, a := range costly[:min(top, len(costly))] {
		fmt.Fprintf(w, "| %s | %.1f | %.1f %% |\n", a.name(), a.cpu(), 100*a.cpu()/total)
	}

	if len(modules) > 0 {
		perModule := map[string]float64{}
		count := map[string]int{}
		for _, a := range costly {
			m := modules[a.Package]
			switch {
			case a.Mode == "link":
				m = "(link)"
			case m == "":
				m = "(other)"
			}
			perModule[m] += a.cpu()
			count[m]++
		}
		names := make([]string, 0, len(perModule))
		for m := range perModule {
			names = append(names, m)
		}
		sort.Slice(names, func(i, j int) bool { return perModule[names[i]] > perModule[names[j]] })
		fmt.Fprintf(w, "\n| module | CPU s | share | actions |\n|---|---|---|---|\n")
		for _, m := range names[:min(top, len(names))] {
			fmt.Fprintf(w, "| %s | %.1f | %.1f %% | %d |\n", m, perModule[m], 100*perModule[m]/total, count[m])
		}
	}

	length, chain := longestChain(acts)
	fmt.Fprintf(w, "\nlongest dependency chain: %.1f CPU s\n", length)
	for _, a := range chain {
		if a.cpu() >= 0.3 {
			fmt.Fprintf(w, "  %-60s %5.1f\n", a.name(), a.cpu())
		}
	}
	fmt.Fprintf(w, "\nreplayed on %d idle CPUs in the go command's order: %.1f s wall\n", cpus, replay(acts, cpus))
	return nil
}

func parseGraph(raw []byte) (map[int]*action, error) {
	var list []*action
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	acts := make(map[int]*action, len(list))
	for _, a := range list {
		acts[a.ID] = a
	}
	for _, a := range list {
		for _, d := range a.Deps {
			if acts[d] == nil {
				return nil, fmt.Errorf("action %d depends on unknown action %d", a.ID, d)
			}
		}
	}
	return acts, nil
}

// listModules maps every package the given patterns depend on to its module path ("std" for the
// standard library).
func listModules(ctx context.Context, pkgs []string) (map[string]string, error) {
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}} {{with .Module}}{{.Path}}{{else}}std{{end}}"}, pkgs...)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps %s: %w: %s", strings.Join(pkgs, " "), err, stderr.Bytes())
	}
	modules := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if pkg, mod, ok := strings.Cut(sc.Text(), " "); ok {
			modules[pkg] = mod
		}
	}
	return modules, sc.Err()
}

// longestChain returns the CPU seconds of the most expensive path through the dependency graph
// and its actions, from the first dependency to the final action.
func longestChain(acts map[int]*action) (float64, []*action) {
	cost := map[int]float64{}
	next := map[int]int{}
	var visit func(id int) float64
	visit = func(id int) float64 {
		if c, ok := cost[id]; ok {
			return c
		}
		best, bestDep := 0.0, -1
		for _, d := range acts[id].Deps {
			if c := visit(d); c > best || bestDep < 0 {
				best, bestDep = c, d
			}
		}
		cost[id] = best + acts[id].cpu()
		next[id] = bestDep
		return cost[id]
	}
	end, endCost := -1, -1.0
	for id := range acts {
		if c := visit(id); c > endCost || (c == endCost && id < end) {
			end, endCost = id, c
		}
	}
	var chain []*action
	for id := end; id >= 0; id = next[id] {
		chain = append(chain, acts[id])
	}
	for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
		chain[i], chain[j] = chain[j], chain[i]
	}
	return endCost, chain
}

// replay runs the graph on cpus workers the way cmd/go's builder does: an action becomes ready
// when its dependencies are done, and a free worker takes the ready action with the lowest
// Priority (cmd/go's depth-first post-order). An action takes its CPU seconds; the result is the
// time the last one finishes.
func replay(acts map[int]*action, cpus int) float64 {
	waiting := map[int]int{}
	users := map[int][]int{}
	ready := &byKey{}
	for id, a := range acts {
		seen := map[int]bool{}
		for _, d := range a.Deps {
			if !seen[d] {
				seen[d] = true
				users[d] = append(users[d], id)
			}
		}
		waiting[id] = len(seen)
		if len(seen) == 0 {
			heap.Push(ready, item{float64(a.Priority), id})
		}
	}
	running := &byKey{}
	now := 0.0
	for ready.Len() > 0 || running.Len() > 0 {
		for ready.Len() > 0 && running.Len() < cpus {
			it := heap.Pop(ready).(item)
			heap.Push(running, item{now + acts[it.id].cpu(), it.id})
		}
		done := heap.Pop(running).(item)
		now = done.key
		for _, u := range users[done.id] {
			if waiting[u]--; waiting[u] == 0 {
				heap.Push(ready, item{float64(acts[u].Priority), u})
			}
		}
	}
	return now
}

type item struct {
	key float64
	id  int
}

// byKey is a min-heap of items by key, then id (so that a replay is deterministic).
type byKey []item

func (h byKey) Len() int { return len(h) }
func (h byKey) Less(i, j int) bool {
	if h[i].key != h[j].key {
		return h[i].key < h[j].key
	}
	return h[i].id < h[j].id
}
func (h byKey) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *byKey) Push(x any)   { *h = append(*h, x.(item)) }
func (h *byKey) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
