package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeBlock returns the fenced block that follows the marker line in the
// project README.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	_, rest, _ = strings.Cut(rest, "```")
	_, rest, _ = strings.Cut(rest, "\n")
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("README.md: the block after %q does not end", marker)
	}
	return strings.Split(strings.TrimRight(block, "\n"), "\n")
}

// TestReadmeQuickStart runs the README's quick start as a newcomer would,
// line by line in one shell, with bin/l4lb built from this tree, and
// compares what it prints with the output the README shows; then checks
// that every metric family the running agent exports is in the README's
// metrics reference. It needs dig and curl (make deps installs them).
func TestReadmeQuickStart(t *testing.T) {
	for _, tool := range []string{"dig", "curl", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the quick start needs %s (make deps installs it): %v", tool, err)
		}
	}
	lines := readmeBlock(t, "<!-- quickstart:")
	want := readmeBlock(t, "<!-- quickstart-output -->")

	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", "l4lb"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	_ = os.RemoveAll("/tmp/l4lb-quick")
	t.Cleanup(func() { _ = os.RemoveAll("/tmp/l4lb-quick") })

	// The agent the block starts is stopped by its last line (kill %1);
	// the scrape of /metrics goes between the block's commands and that.
	var script []string
	for _, l := range lines {
		if strings.TrimSpace(l) == "kill %1" {
			script = append(script, `curl -sf 127.0.0.1:62080/metrics > metrics.txt || echo "metrics: $?"`)
		}
		script = append(script, l)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", "set -m\n"+strings.Join(script, "\n")+"\nwait\n")
	sh.Dir = dir
	out, err := sh.Output()
	if err != nil {
		log, _ := os.ReadFile("/tmp/l4lb-quick.log")
		t.Fatalf("the quick start failed: %v\noutput:\n%s\nagent log:\n%s", err, out, log)
	}
	host, _ := os.Hostname()
	var got []string
	for _, l := range strings.Split(strings.TrimRight(strings.ReplaceAll(string(out), "("+host+")", "(laptop)"), "\n"), "\n") {
		if !strings.HasPrefix(l, "waiting: ") { // --wait says what it waits for, as long as it waits
			got = append(got, l)
		}
	}
	space := regexp.MustCompile(`\s+`)
	if len(got) != len(want) {
		t.Fatalf("the quick start printed %d lines, the README shows %d:\n%s", len(got), len(want), out)
	}
	for i := range want {
		if space.ReplaceAllString(got[i], " ") != space.ReplaceAllString(want[i], " ") {
			t.Errorf("line %d: printed %q, the README shows %q", i+1, got[i], want[i])
		}
	}

	metrics, err := os.ReadFile(filepath.Join(dir, "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	readme, _ := os.ReadFile("../../README.md")
	_, ref, _ := strings.Cut(string(readme), "### Metrics")
	ref, _, _ = strings.Cut(ref, "\n## ")
	sc := bufio.NewScanner(strings.NewReader(string(metrics)))
	n := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "#" || f[1] != "HELP" || !strings.HasPrefix(f[2], "l4lb_") {
			continue
		}
		n++
		if !strings.Contains(ref, "`"+f[2]+"`") && !strings.Contains(ref, "`"+f[2]+"{") {
			t.Errorf("metric %s is exported but not in the README's metrics reference", f[2])
		}
	}
	if n < 10 {
		t.Errorf("only %d l4lb metric families scraped; the scrape did not work:\n%s", n, metrics)
	}
}
