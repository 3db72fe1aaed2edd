package main

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data, and the metadata needed to read it back (its size), to the device.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// syncDisks writes every file system's dirty data back and waits for it (sync(2) waits on
// Linux): a phase on an embedded store then does not pay for the writeback of what ran before
// it (an atomic batch creates and removes a directory: thousands a second leave the journal
// busy well after the phase that made them).
func syncDisks() { syscall.Sync() }
