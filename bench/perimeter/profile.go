package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// Sampling of the block and mutex profiles while a phase is measured: one blocking event per
// microsecond spent blocked, one mutex contention event in five.
const (
	blockProfileRate     = 1000
	mutexProfileFraction = 5
)

// phaseProfile is the CPU, block and mutex profiling of one phase's measured window.
type phaseProfile struct {
	prefix string
	cpu    *os.File
}

// startPhaseProfile starts profiling into prefix.{cpu,block,mutex,allocs}; a nil profile when
// prefix is "".
func startPhaseProfile(prefix string) (*phaseProfile, error) {
	if prefix == "" {
		return nil, nil
	}
	f, err := os.Create(prefix + ".cpu")
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(fmt.Errorf("cpu profile: %w", err), f.Close())
	}
	runtime.SetBlockProfileRate(blockProfileRate)
	runtime.SetMutexProfileFraction(mutexProfileFraction)
	return &phaseProfile{prefix: prefix, cpu: f}, nil
}

// stop ends the profiles and writes the block and mutex profiles, and the allocations profile
// (counted since the process started: compare phases with go tool pprof -base).
func (p *phaseProfile) stop() error {
	if p == nil {
		return nil
	}
	pprof.StopCPUProfile()
	runtime.SetBlockProfileRate(0)
	runtime.SetMutexProfileFraction(0)
	err := p.cpu.Close()
	for _, name := range []string{"block", "mutex", "allocs"} {
		f, ferr := os.Create(p.prefix + "." + name)
		if ferr != nil {
			err = errors.Join(err, ferr)
			continue
		}
		err = errors.Join(err, pprof.Lookup(name).WriteTo(f, 0), f.Close())
	}
	return err
}
