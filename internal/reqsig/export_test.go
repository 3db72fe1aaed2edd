package reqsig

// LiveNonces counts the nonces f remembers (storetest's CountRecords).
func LiveNonces(f *FileNonces) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}
