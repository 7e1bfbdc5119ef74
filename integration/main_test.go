package integration

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/integration/bed"
)

// binaries are the commands the tests run, built once for both passes.
var binaries = []string{"github.com/l4lb/l4lb/cmd/l4lb", "github.com/l4lb/l4lb/cmd/l4lb-demoapp"}

// hostTests run on the host kernel, in namespaces they create: the nftables
// data plane, which this machine kind's kernel has (with NAT in network
// namespaces) and which needs no guest. Every other test runs in the UML
// guest (bed.Main), where IPVS is.
var hostTests = []string{"TestSeedScenarioNFTables", "TestDockerSeedNFTables", "TestSharedCasesNFTables"}

// envPass tells a re-executed test binary which pass it is: "guest" (run
// through bed.Main, without the host tests) or "list" (list the tests).
const envPass = "L4LB_INTEGRATION_PASS"

// TestMain runs the package in two passes: the host tests in this process
// on the host kernel, then the others in a child that boots the UML guest
// through bed.Main. Each test runs in exactly one pass; the package fails if
// either pass fails.
func TestMain(m *testing.M) {
	switch os.Getenv(envPass) {
	case "guest":
		bed.Main(m, bed.Build(binaries...))
	case "list":
		os.Exit(m.Run())
	}
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run())
	}
	os.Exit(runPasses(m))
}

func runPasses(m *testing.M) int {
	if os.Getenv(bed.EnvBinDir) == "" {
		dir, err := bed.BuildBinaries(binaries...)
		if err != nil {
			fmt.Printf("FAIL: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		os.Setenv(bed.EnvBinDir, dir)
	}
	run, skip := flagValue("test.run"), flagValue("test.skip")
	code := 0
	if host, rest, err := selectHost(run, skip); err != nil {
		fmt.Printf("FAIL: %v\n", err)
		return 1
	} else if len(host) > 0 {
		code = hostPass(m, host, rest)
	}
	guest, err := guestTests(run, skip)
	if err != nil {
		fmt.Printf("FAIL: %v\n", err)
		return 1
	}
	if len(guest) > 0 {
		if c := guestPass(skip); c != 0 {
			code = c
		}
	}
	return code
}

func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// topLevel splits a -test.run or -test.skip pattern into its top-level
// part and the rest (subtests), as package testing does for plain patterns.
func topLevel(pattern string) (string, string) {
	top, rest, _ := strings.Cut(pattern, "/")
	return top, rest
}

// selectHost returns the host tests that -run and -skip select, and the
// subtest part of -run.
func selectHost(run, skip string) ([]string, string, error) {
	top, rest := topLevel(run)
	var sel []string
	for _, name := range hostTests {
		ok, err := selected(name, top, skip)
		if err != nil {
			return nil, "", err
		}
		if ok {
			sel = append(sel, name)
		}
	}
	return sel, rest, nil
}

func selected(name, run, skip string) (bool, error) {
	if run != "" {
		ok, err := regexp.MatchString(run, name)
		if err != nil {
			return false, fmt.Errorf("-test.run %q: %w", run, err)
		}
		if !ok {
			return false, nil
		}
	}
	if top, _ := topLevel(skip); top != "" && !strings.Contains(skip, "/") {
		ok, err := regexp.MatchString(top, name)
		if err != nil {
			return false, fmt.Errorf("-test.skip %q: %w", skip, err)
		}
		return !ok, nil
	}
	return true, nil
}

// hostPass runs the host tests in this process, on the host kernel.
func hostPass(m *testing.M, tests []string, rest string) int {
	pattern := "^(" + strings.Join(tests, "|") + ")$"
	if rest != "" {
		pattern += "/" + rest
	}
	if err := flag.Set("test.run", pattern); err != nil {
		fmt.Printf("FAIL: set -test.run for the host pass: %v\n", err)
		return 1
	}
	fmt.Printf("=== integration: %s on the host kernel (nf_tables in namespaces)\n", strings.Join(tests, ", "))
	prev, had := os.LookupEnv(bed.EnvKernel)
	os.Setenv(bed.EnvKernel, "host")
	defer func() {
		if had {
			os.Setenv(bed.EnvKernel, prev)
		} else {
			os.Unsetenv(bed.EnvKernel)
		}
	}()
	return m.Run()
}

// guestSkip is -test.skip for the guest pass: the user's, and the host tests.
func guestSkip(skip string) string {
	own := "^(" + strings.Join(hostTests, "|") + ")$"
	if skip == "" || strings.Contains(skip, "/") {
		return own
	}
	return "(?:" + skip + ")|" + own
}

// guestTests lists the tests, benchmarks and examples the guest pass would
// run (the binary's own -test.list), so that no guest boots for nothing.
func guestTests(run, skip string) ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	top, _ := topLevel(run)
	if top == "" {
		top = "."
	}
	cmd := exec.Command(exe, "-test.list", top)
	cmd.Env = append(os.Environ(), envPass+"=list")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list the tests: %w", err)
	}
	var names []string
	for _, name := range strings.Fields(string(out)) {
		if ok, err := selected(name, "", guestSkip(skip)); err != nil {
			return nil, err
		} else if ok && name != "ok" {
			names = append(names, name)
		}
	}
	return names, nil
}

// guestPass runs this binary again with the same arguments, without the
// host tests, through bed.Main (which boots the UML guest), and returns its
// exit code.
func guestPass(skip string) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Printf("FAIL: find own executable: %v\n", err)
		return 1
	}
	cmd := exec.Command(exe, append(append([]string(nil), os.Args[1:]...), "-test.skip="+guestSkip(skip))...)
	cmd.Env = append(os.Environ(), envPass+"=guest")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Printf("FAIL: run the guest pass: %v\n", err)
		return 1
	}
	return 0
}
