package bed

// T is what the test bed needs of a test: *testing.T and *testing.B satisfy
// it, and so can a program that is not a test (the demo).
type T interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}
