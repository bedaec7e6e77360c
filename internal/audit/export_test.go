package audit

// SetMinParallel lowers the log size from which Verify runs segments in
// parallel, so small test logs exercise that path; it returns the undo.
func SetMinParallel(n int64) func() {
	old := minParallel
	minParallel = n
	return func() { minParallel = old }
}
