package bed

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Environment variables that steer the test bed.
const (
	// EnvKernel selects where kernel tests run: "uml" (the default) boots a
	// User-Mode Linux guest; "host" runs them on the host kernel, which must
	// then have IPVS.
	EnvKernel = "L4LB_KERNEL"
	// EnvUML names the UML kernel binary (default: linux.uml on PATH).
	EnvUML = "L4LB_UML"
	// EnvUMLMem is the guest's memory (default 1G).
	EnvUMLMem = "L4LB_UML_MEM"
	// EnvSummary names a file to which the bed appends, for each test binary
	// it ran in a guest, how many tests passed, failed and skipped there
	// (make test prints it, since go test hides a passing package's output).
	EnvSummary = "L4LB_BED_SUMMARY"
	// envInGuest is set by the test bed for the process it starts in the guest.
	envInGuest = "L4LB_BED_GUEST"
)

// guestUpMarker is printed by the guest's init once the kernel is up; what
// UML prints before it is boot noise, shown only when the guest fails.
const guestUpMarker = "=== l4lb bed: guest up"

// guestDoneMarker is printed by the guest's init when the tests have ended;
// what follows is shutdown noise.
const guestDoneMarker = "=== l4lb bed: guest done"

// InGuest reports whether this process runs inside the test bed's guest (or
// on a host kernel the runner chose with L4LB_KERNEL=host).
func InGuest() bool {
	return os.Getenv(envInGuest) != "" || os.Getenv(EnvKernel) == "host"
}

// Main runs a package's tests on a real kernel with IPVS. Call it from
// TestMain:
//
//	func TestMain(m *testing.M) { bed.Main(m) }
//
// On the host it boots a UML guest, re-executes this test binary inside it
// with the same arguments, relays its output and exits with its exit code.
// Inside the guest it prepares the kernel (modules, loopback) and runs the
// tests. If the guest cannot start, every test of the package fails with the
// reason: kernel tests never pass by skipping.
func Main(m *testing.M, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	os.Exit(run(m.Run, o, runTestsInGuest))
}

// RunProgram is Main for a program that is not a test (the demo): on the
// host it boots the guest and runs this same program inside with the same
// arguments; inside, it prepares the kernel and calls fn. It exits with fn's
// exit code.
func RunProgram(fn func() int, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	os.Exit(run(fn, o, runInGuest))
}

// run runs fn here when this is the guest, or boots a guest that runs this
// binary again through inGuest.
func run(fn func() int, o options, inGuest func(exe string, args []string, out io.Writer) (int, error)) int {
	if len(o.build) > 0 && os.Getenv(EnvBinDir) == "" && os.Getenv(envInGuest) == "" {
		dir, err := BuildBinaries(o.build...)
		if err != nil {
			fmt.Fprintf(os.Stdout, "FAIL: kernel test bed: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		os.Setenv(EnvBinDir, dir)
	}
	if InGuest() {
		if err := prepareKernel(); err != nil {
			fmt.Fprintf(os.Stdout, "FAIL: kernel test bed: %v\n", err)
			return 1
		}
		return fn()
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stdout, "FAIL: kernel test bed: find own executable: %v\n", err)
		return 1
	}
	code, err := inGuest(exe, os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stdout, "FAIL: kernel test bed could not run %s in a UML guest: %v\n", filepath.Base(exe), err)
		fmt.Fprintf(os.Stdout, "(run `make deps` to install user-mode-linux, or set %s=host on a host whose kernel has IPVS)\n", EnvKernel)
		return 1
	}
	return code
}

// EnvBinDir is the directory that holds the binaries built for the guest.
const EnvBinDir = "L4LB_BIN_DIR"

// Option changes what Main does.
type Option func(*options)

type options struct {
	build []string
}

// Build makes Main build these packages (import paths of commands) on the
// host before it boots the guest; tests find the binaries with Binary.
// Setting L4LB_BIN_DIR skips the build and uses binaries from there.
func Build(pkgs ...string) Option {
	return func(o *options) { o.build = append(o.build, pkgs...) }
}

// BuildBinaries builds the commands pkgs (import paths) on the host into a
// new directory and returns it; Main does it for Build, and runs on the
// host kernel that do not go through Main call it themselves.
func BuildBinaries(pkgs ...string) (string, error) {
	dir, err := os.MkdirTemp("", "l4lb-bin-")
	if err != nil {
		return "", fmt.Errorf("temp dir for binaries: %w", err)
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return dir, nil
}

// Binary returns the path of a binary that Main built (see Build).
func Binary(t T, name string) string {
	t.Helper()
	dir := os.Getenv(EnvBinDir)
	if dir == "" {
		t.Fatalf("binary %s: no %s; pass bed.Build(...) to bed.Main", name, EnvBinDir)
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("binary %s: %v", name, err)
	}
	return p
}

// runTestsInGuest runs a test binary in the guest, always verbose so that
// the bed can count what ran; without -test.v the output is shown only when
// the binary fails, as go test would. It appends a summary to $L4LB_BED_SUMMARY.
func runTestsInGuest(exe string, args []string, out io.Writer) (int, error) {
	verbose := false
	for _, a := range args {
		if a == "-test.v=true" || a == "-test.v" {
			verbose = true
		}
	}
	var buf bytes.Buffer
	w := io.Writer(&buf)
	if verbose {
		w = io.MultiWriter(out, &buf)
	}
	code, err := runInGuest(exe, append(append([]string(nil), args...), "-test.v=true"), w)
	if err != nil {
		return code, err
	}
	if !verbose && code != 0 {
		_, _ = out.Write(buf.Bytes())
	}
	c := countTests(buf.String())
	if path := os.Getenv(EnvSummary); path != "" {
		f, ferr := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if ferr == nil {
			fmt.Fprintf(f, "%s (%s): %d passed, %d failed, %d skipped inside the UML guest (%s)\n",
				filepath.Base(exe), c.pkg, c.passed, c.failed, c.skipped, c.kernel)
			f.Close()
		}
	}
	return code, nil
}

// testCount is what a verbose test run reported.
type testCount struct {
	passed, failed, skipped int
	kernel, pkg             string
}

// countTests counts the top-level tests of verbose go test output.
func countTests(out string) testCount {
	var c testCount
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "--- PASS: "):
			c.passed++
		case strings.HasPrefix(line, "--- FAIL: "):
			c.failed++
		case strings.HasPrefix(line, "--- SKIP: "):
			c.skipped++
		case strings.HasPrefix(line, guestUpMarker):
			c.kernel = strings.TrimPrefix(strings.TrimPrefix(line, guestUpMarker), ": ")
		}
	}
	if wd, err := os.Getwd(); err == nil {
		c.pkg = filepath.Base(wd)
	}
	return c
}

// umlBinary finds the UML kernel.
func umlBinary() (string, error) {
	if p := os.Getenv(EnvUML); p != "" {
		return p, nil
	}
	for _, name := range []string{"linux.uml", "linux"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no User-Mode Linux kernel: linux.uml is not on PATH and %s is not set", EnvUML)
}

// runInGuest boots a guest that runs exe with args (exe must be an absolute
// path, visible in the guest through hostfs) and returns its exit code.
// Output after the guest is up goes to out.
func runInGuest(exe string, args []string, out io.Writer) (int, error) {
	uml, err := umlBinary()
	if err != nil {
		return 0, err
	}
	shim, err := xstateShim()
	if err != nil {
		return 0, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return 0, fmt.Errorf("working directory: %w", err)
	}
	dir, err := os.MkdirTemp("", "l4lb-bed-")
	if err != nil {
		return 0, fmt.Errorf("temp dir for the guest: %w", err)
	}
	defer os.RemoveAll(dir)

	rcFile := filepath.Join(dir, "rc")
	script := initScript(exe, args, cwd, rcFile)
	initPath := filepath.Join(dir, "init")
	if err := os.WriteFile(initPath, []byte(script), 0o755); err != nil {
		return 0, fmt.Errorf("write guest init: %w", err)
	}
	mem := os.Getenv(EnvUMLMem)
	if mem == "" {
		mem = "1G"
	}
	kargs := []string{
		"mem=" + mem,
		"rootfstype=hostfs", "rootflags=/", "rw",
		"init=" + initPath,
		"con=null", "con0=null,fd:1",
		"umid=l4lb-bed-" + strconv.Itoa(os.Getpid()),
		"uml_dir=" + dir,
		"quiet", "loglevel=3",
	}
	cmd := exec.Command(uml, kargs...)
	preload := shim
	if v := os.Getenv("LD_PRELOAD"); v != "" {
		preload += ":" + v
	}
	cmd.Env = append(os.Environ(), "TMPDIR="+dir, "LD_PRELOAD="+preload)
	cmd.Stdin = nil
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw

	timeout := guestTimeout(args)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", uml, err)
	}
	fmt.Fprintf(out, "=== kernel test bed: booting %s (%s) for %s\n", filepath.Base(uml), mem, filepath.Base(exe))

	var boot bytes.Buffer
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		up := false
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			if !up {
				if strings.HasPrefix(line, guestUpMarker) {
					up = true
					fmt.Fprintln(out, line)
				} else if boot.Len() < 64*1024 {
					boot.WriteString(line + "\n")
				}
				continue
			}
			if strings.HasPrefix(line, guestDoneMarker) {
				up = false
				continue
			}
			fmt.Fprintln(out, line)
		}
	}()

	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waitErr:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		werr = <-waitErr
		pw.Close()
		<-relayed
		return 0, fmt.Errorf("guest still running after %s; killed (boot output:\n%s)", timeout, boot.String())
	}
	pw.Close()
	<-relayed

	b, err := os.ReadFile(rcFile)
	if err != nil {
		return 0, fmt.Errorf("guest ended (%v) without reporting an exit code; its boot output:\n%s", werr, boot.String())
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("guest reported a bad exit code %q", b)
	}
	return code, nil
}

// guestTimeout is the test binary's own -test.timeout plus a margin for
// booting, or 30 minutes when there is none.
func guestTimeout(args []string) time.Duration {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "-test.timeout="); ok {
			if d, err := time.ParseDuration(v); err == nil && d > 0 {
				return d + time.Minute
			}
		}
	}
	return 30 * time.Minute
}

// initScript is the guest's init: mount what the tests need, run the test
// binary with the host's environment, report its exit code through hostfs,
// and power off.
func initScript(exe string, args []string, cwd, rcFile string) string {
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	b.WriteString("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
	b.WriteString("mount -t proc proc /proc\nmount -t sysfs sysfs /sys\n")
	b.WriteString("mount -t tmpfs -o mode=755 tmpfs /run\nmkdir -p /run/netns /run/lock\n")
	b.WriteString("mount -t devtmpfs devtmpfs /dev 2>/dev/null\nmkdir -p /dev/pts /dev/shm\nmount -t devpts devpts /dev/pts 2>/dev/null\nmount -t tmpfs tmpfs /dev/shm 2>/dev/null\n")
	b.WriteString("mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null\n")
	b.WriteString("hostname l4lb-guest\n")
	for _, kv := range os.Environ() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !validEnvName(k) {
			continue
		}
		switch k {
		case "PATH", "TMPDIR", envInGuest, "PWD", "OLDPWD", "SHLVL", "_":
			continue
		}
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	if v := os.Getenv("TMPDIR"); v != "" {
		fmt.Fprintf(&b, "export TMPDIR=%s\n", shellQuote(v))
	}
	fmt.Fprintf(&b, "export %s=1\n", envInGuest)
	fmt.Fprintf(&b, "cd %s || exit 1\n", shellQuote(cwd))
	fmt.Fprintf(&b, "echo '%s: '\"$(uname -sr)\"\n", guestUpMarker)
	b.WriteString(shellQuote(exe))
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString(" </dev/null 2>&1\n")
	fmt.Fprintf(&b, "rc=$?\necho $rc > %s\n", shellQuote(rcFile))
	fmt.Fprintf(&b, "echo '%s'\n", guestDoneMarker)
	b.WriteString("sync\npoweroff -f || echo o > /proc/sysrq-trigger\n")
	return b.String()
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		if r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9') {
			continue
		}
		return false
	}
	return true
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
