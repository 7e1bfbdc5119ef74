package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, content := range []string{"first\n", "second, longer\n", ""} {
		if err := Write(p, []byte(content), nil); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("read back %q, %v; want %q", got, err, content)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestFailureBeforeRenameKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := Write(p, []byte("old\n"), nil); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk on fire")
	if err := Write(p, []byte("new\n"), func(string) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the hook's error", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "old\n" {
		t.Errorf("file is %q after a failed write, want the old content", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if err := Write(filepath.Join(dir, "missing", "x"), []byte("x"), nil); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}
