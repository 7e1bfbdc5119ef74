package bed

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// xstateSource is the ptrace wrapper preloaded into linux.uml: UML 6.1 keeps
// 832 bytes of FP/vector state per guest thread, and a host whose XSAVE area
// is larger (AVX-512, AMX: 11,008 bytes) refuses its short PTRACE_SETREGSET,
// which kills the guest's init at boot. uml/xstate.c says how it keeps every
// guest thread's whole state instead; on a host whose area fits, it only
// passes calls through.
//
//go:embed uml/xstate.c
var xstateSource []byte

var (
	xstateOnce sync.Once
	xstatePath string
	xstateErr  error
)

// xstateShim returns the path of the compiled wrapper, building it once per
// source version into the user's cache directory.
func xstateShim() (string, error) {
	xstateOnce.Do(func() { xstatePath, xstateErr = buildXstateShim() })
	return xstatePath, xstateErr
}

func buildXstateShim() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256(xstateSource)
	dir := filepath.Join(cache, "l4lb-bed")
	lib := filepath.Join(dir, "uml-xstate-"+hex.EncodeToString(sum[:6])+".so")
	if _, err := os.Stat(lib); err == nil {
		return lib, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cache directory for the UML xstate wrapper: %w", err)
	}
	cc, err := cCompiler()
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", fmt.Errorf("build directory for the UML xstate wrapper: %w", err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "xstate.c")
	if err := os.WriteFile(src, xstateSource, 0o644); err != nil {
		return "", fmt.Errorf("write the UML xstate wrapper's source: %w", err)
	}
	out := filepath.Join(tmp, "xstate.so")
	cmd := exec.Command(cc, "-O2", "-Wall", "-shared", "-fPIC", "-o", out, src, "-ldl")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("compile the UML xstate wrapper with %s: %w\n%s", cc, err, msg)
	}
	// Rename is atomic: test binaries building it at once each get a whole file.
	if err := os.Rename(out, lib); err != nil {
		return "", fmt.Errorf("install the UML xstate wrapper: %w", err)
	}
	return lib, nil
}

// cCompiler is $CC, or cc or gcc on PATH.
func cCompiler() (string, error) {
	if cc := os.Getenv("CC"); cc != "" {
		return cc, nil
	}
	for _, name := range []string{"cc", "gcc"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no C compiler (cc or gcc on PATH, or $CC) to build the UML xstate wrapper; `make deps` installs gcc")
}
