package bed

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// These tests run on the host: they test the harness, not the kernel.

func TestMissingKernelIsAnError(t *testing.T) {
	t.Setenv(EnvUML, "/nonexistent/linux.uml")
	var out bytes.Buffer
	_, err := runInGuest("/bin/true", nil, &out)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/linux.uml") {
		t.Fatalf("runInGuest with a missing kernel: err = %v, want an error naming the kernel", err)
	}
}

func TestGuestExitCodeComesBack(t *testing.T) {
	if InGuest() {
		t.Fatal("this test boots its own guest and must run on the host")
	}
	for _, tc := range []struct {
		name string
		code int
	}{{"success", 0}, {"failure", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			script := "echo hello from $(uname -r); exit " + string(rune('0'+tc.code))
			code, err := runInGuest("/bin/sh", []string{"-c", script}, &out)
			if err != nil {
				t.Fatalf("runInGuest: %v\noutput:\n%s", err, out.String())
			}
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if !strings.Contains(out.String(), "hello from 6.") {
				t.Errorf("guest output not relayed, or not from the UML kernel:\n%s", out.String())
			}
			if strings.Contains(out.String(), "reboot: System halted") {
				t.Errorf("shutdown noise relayed:\n%s", out.String())
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"plain", "with space", "it's", `"$HOME" $(x) \n`, ""} {
		out, err := exec.Command("/bin/bash", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("shellQuote(%q) read back as %q (err %v)", s, out, err)
		}
	}
}

func TestParseIPVSAdm(t *testing.T) {
	out := `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  11.0.0.1:8080 wlc persistent 300
  -> 10.1.1.2:8080                Masq    1      2          5
  -> 10.1.2.2:8080                Masq    0      0          0
UDP  [fd01:c::1]:53 rr
`
	got, err := ParseIPVSAdm(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []IPVSService{
		{Protocol: "TCP", Address: "11.0.0.1:8080", Scheduler: "wlc", Flags: "persistent 300", Real: []IPVSReal{
			{Address: "10.1.1.2:8080", Forward: "Masq", Weight: 1, ActiveConn: 2, InActConn: 5},
			{Address: "10.1.2.2:8080", Forward: "Masq", Weight: 0},
		}},
		{Protocol: "UDP", Address: "[fd01:c::1]:53", Scheduler: "rr"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"  -> 10.0.0.1:80 Masq 1 0 0\n", "TCP 11.0.0.1:80 rr\n  -> 10.0.0.1:80 Masq x 0 0\n", "garbage line here\n"} {
		if _, err := ParseIPVSAdm(bad); err == nil {
			t.Errorf("ParseIPVSAdm(%q) gave no error", bad)
		}
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/net/netfilter/ipvs/ip_vs_rr.ko": "ip_vs_rr",
		"kernel/drivers/net/dummy.ko":           "dummy",
		"kernel/net/x-y.ko.xz":                  "x_y",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := os.Stat("/usr/lib/uml/modules"); err != nil {
		t.Fatalf("user-mode-linux modules missing (run make deps): %v", err)
	}
}

func TestCountTests(t *testing.T) {
	out := guestUpMarker + ": Linux 6.1.176\n=== RUN   TestA\n--- PASS: TestA (0.1s)\n=== RUN   TestB\n    --- PASS: TestB/sub (0s)\n--- FAIL: TestB (0s)\n--- SKIP: TestC (0s)\n--- PASS: TestD (0s)\n"
	c := countTests(out)
	if c.passed != 2 || c.failed != 1 || c.skipped != 1 || c.kernel != "Linux 6.1.176" {
		t.Errorf("countTests = %+v", c)
	}
}

// TestGuestThreadsKeepTheirVectorRegisters proves that the guest does not
// mix up its threads' vector registers, on this host's CPU: UML saves and
// restores them through the bed's ptrace wrapper (uml/xstate.c), and a
// register that slipped through would corrupt any multi-threaded program in
// the guest (Go's and glibc's memmove use them).
func TestGuestThreadsKeepTheirVectorRegisters(t *testing.T) {
	if InGuest() {
		t.Fatal("this test boots its own guest and must run on the host")
	}
	probe := filepath.Join(t.TempDir(), "vecprobe")
	if out, err := exec.Command("go", "build", "-o", probe, "./internal/vecprobe").CombinedOutput(); err != nil {
		t.Fatalf("build vecprobe: %v\n%s", err, out)
	}
	var out bytes.Buffer
	code, err := runInGuest(probe, nil, &out)
	if err != nil {
		t.Fatalf("runInGuest: %v\noutput:\n%s", err, out.String())
	}
	t.Logf("guest output:\n%s", out.String())
	if code != 0 {
		t.Fatalf("vecprobe exited %d in the guest: a thread saw another's registers, or none was preempted", code)
	}
	// Exit code 0 already says no register was corrupted; the report says
	// which register sets were checked, and YMM always must have been.
	if !regexp.MustCompile(`vecprobe ymm: \d+ threads, [1-9]\d* preemptions, 0 corrupted registers`).MatchString(out.String()) {
		t.Fatalf("vecprobe did not report a clean YMM check with preemptions in the guest output")
	}
}
