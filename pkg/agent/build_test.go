package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildClosesWhatItOpened: build holds the state directory until
// close, and a build that fails after taking it (a bad gossip key file)
// lets it go again.
func TestBuildClosesWhatItOpened(t *testing.T) {
	o := loopbackAgent(t, "node-a")
	p, err := build(o)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	if _, err := build(o); err == nil || !strings.Contains(err.Error(), "is in use by pid") {
		t.Fatalf("second build on the same state directory: %v, want in use", err)
	}
	p.close()

	bad := o
	bad.GossipKeyFile = filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(bad.GossipKeyFile, []byte("not base64\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := build(bad); err == nil || !strings.Contains(err.Error(), "not base64") {
		t.Fatalf("build with a bad key file: %v, want not base64", err)
	}
	p, err = build(o)
	if err != nil {
		t.Fatalf("build after a failed build: %v", err)
	}
	p.close()
}
