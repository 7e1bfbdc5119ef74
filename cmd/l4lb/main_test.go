package main

import (
	"bytes"
	"encoding/base64"
	"net"
	"strings"
	"testing"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCommandLineContract(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		stdout  string
		stderr  string
		oneLine bool // the error is a single line
	}{
		{"no command", nil, 2, "", "Usage:", false},
		{"help", []string{"--help"}, 0, "l4lb register", "", false},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`, false},
		{"version", []string{"version"}, 0, "l4lb ", "", false},
		{"register without args", []string{"register"}, 2, "", "want VIP BACKEND, got 0 argument(s)", false},
		{"register bad vip", []string{"register", "/a b:80", "10.0.0.1:80", "--api", "127.0.0.1:1"}, 1, "", "cannot stand in a DNS label", true},
		{"register bad port", []string{"register", "/app:0", "10.0.0.1:80", "--api", "127.0.0.1:1"}, 1, "", "port", true},
		{"register bad backend", []string{"register", "/app:80", "10.0.0.1", "--api", "127.0.0.1:1"}, 1, "", "backend", true},
		{"register bad flag", []string{"register", "/app:80", "10.0.0.1:80", "--weight", "heavy"}, 2, "", "invalid value", false},
		{"register weight past uint32", []string{"register", "/app:80", "10.0.0.1:80", "--weight", "4294967298"}, 2, "", "want a whole number from 0 to 4294967295", false},
		{"register weight past IPVS", []string{"register", "/app:80", "10.0.0.1:80", "--weight", "65536", "--api", "127.0.0.1:1"}, 1, "", "weight", true},
		{"register persistence past uint32", []string{"register", "/app:80", "10.0.0.1:80", "--persistence", "4294967296"}, 2, "", "want a whole number", false},
		{"register, agent down", []string{"register", "/app:80", "10.0.0.1:80", "--api", "127.0.0.1:1"}, 1, "", "cannot reach the l4lb agent at 127.0.0.1:1", true},
		{"deregister, agent down", []string{"deregister", "/app:80", "10.0.0.1:80", "--api", "127.0.0.1:1"}, 1, "", "cannot reach the l4lb agent", true},
		{"vips, agent down", []string{"vips", "--api", "127.0.0.1:1"}, 1, "", "cannot reach the l4lb agent", true},
		{"vips bad output", []string{"vips", "-o", "yaml"}, 1, "", `-o "yaml": want text, wide or json`, true},
		{"vips two filters", []string{"vips", "a", "b"}, 2, "", "want [FILTER], got 2 argument(s)", false},
		{"members, agent down", []string{"members", "-o", "json", "--api", "127.0.0.1:1"}, 1, "", "cannot reach the l4lb agent", true},
		{"leave, agent down", []string{"leave", "--api", "127.0.0.1:1"}, 1, "", "cannot reach the l4lb agent", true},
		{"members extra arg", []string{"members", "x"}, 2, "", "want no arguments", false},
		{"agent bad dataplane", []string{"agent", "--dataplane", "ebpf", "--state-dir", "/nonexistent"}, 1, "", `--dataplane "ebpf": want ipvs, nftables, auto or none`, true},
		{"agent bad cidr", []string{"agent", "--vip-cidr", "11.0.0.1/8"}, 1, "", "host bits set", true},
		{"agent bad ip vip cidrs", []string{"agent", "--ip-vip-cidrs", "10.0.0.0/8,nonsense"}, 1, "", `--ip-vip-cidrs "nonsense"`, true},
		{"agent bad log level", []string{"agent", "--log-level", "loud"}, 1, "", "--log-level", true},
		{"agent public address not an IP", []string{"agent", "--public-address", "192.0.2.10,edge1"}, 1, "", `--public-address "edge1": not an IP address`, true},
		{"register public port out of range", []string{"register", "/app:80", "10.0.0.1:80", "--public", "--public-port", "70000", "--api", "127.0.0.1:1"}, 1, "", "public_port 70000: want 1 to 65535", true},
		{"register public port without public", []string{"register", "/app:80", "10.0.0.1:80", "--public-port", "10000", "--api", "127.0.0.1:1"}, 1, "", `public_port 10000: given without "public": true`, true},
		{"agent missing config", []string{"agent", "--config", "/nonexistent/agent.json"}, 1, "", "config file", true},
		{"agent drain timeout 0", []string{"agent", "--drain-timeout", "0"}, 1, "", "--drain-timeout 0s: want a positive duration like 5m or 30s", true},
		{"agent bad duration", []string{"agent", "--resync-period", "often"}, 2, "", `invalid value "often" for flag -resync-period: want a duration like 5m or 30s`, false},
		{"deregister bad timeout", []string{"deregister", "/app:80", "10.0.0.1:80", "--wait", "--timeout", "5x"}, 2, "", "want a duration like 5m or 30s", false},
		{"version flag", []string{"--version"}, 0, "l4lb ", "", false},
		{"help command", []string{"help", "register"}, 0, "", "Usage: l4lb register", false},
		{"help unknown command", []string{"help", "frobnicate"}, 2, "", `unknown command "frobnicate"`, false},
		{"api as a bare host", []string{"vips", "--api", "127.0.0.1"}, 1, "", "cannot reach the l4lb agent at 127.0.0.1:62080", true},
		{"api as a URL", []string{"vips", "--api", "http://127.0.0.1:1/"}, 1, "", "cannot reach the l4lb agent at 127.0.0.1:1", true},
		{"api with a path", []string{"vips", "--api", "http://127.0.0.1:1/v1"}, 2, "", "want host:port, a host or http://host:port", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.code, errs)
			}
			if !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout %q lacks %q", out, tc.stdout)
			}
			if !strings.Contains(errs, tc.stderr) {
				t.Errorf("stderr %q lacks %q", errs, tc.stderr)
			}
			if tc.oneLine && strings.Count(strings.TrimSpace(errs), "\n") != 0 {
				t.Errorf("error is not one line:\n%s", errs)
			}
		})
	}
}

func TestKeygen(t *testing.T) {
	code, out, _ := runCLI("keygen")
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if code != 0 || err != nil || len(key) != 32 {
		t.Fatalf("keygen: %d %q %v", code, out, err)
	}
	_, out2, _ := runCLI("keygen")
	if out == out2 {
		t.Error("two keys are the same")
	}
}

func TestEveryCommandExplainsItself(t *testing.T) {
	for _, c := range commands() {
		code, _, errs := runCLI(c.name, "--help")
		if code != 0 || !strings.Contains(errs, "Usage: l4lb "+c.name) {
			t.Errorf("l4lb %s --help: exit %d, %q", c.name, code, errs)
		}
	}
}

// TestBadFlagIsOneLineAndAHint: a mistyped flag gets the error and where to
// look, not the whole usage.
func TestBadFlagIsOneLineAndAHint(t *testing.T) {
	code, _, errs := runCLI("vips", "--bogus")
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	if code != 2 || len(lines) != 2 || !strings.Contains(lines[0], "-bogus") || lines[1] != "Run 'l4lb vips --help' for its flags." {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
}

// TestHelpShowsFlagsAsTyped: one-letter flags with one dash, the others
// with two, and what a value looks like.
func TestHelpShowsFlagsAsTyped(t *testing.T) {
	_, _, errs := runCLI("vips", "--help")
	if !strings.Contains(errs, "\n  -o string") || strings.Contains(errs, "--o") || !strings.Contains(errs, "\n  --api address") {
		t.Fatalf("vips --help:\n%s", errs)
	}
	_, _, errs = runCLI("agent", "--help")
	if !strings.Contains(errs, "\n  --drain-timeout duration") || !strings.Contains(errs, `(default "5m0s")`) {
		t.Fatalf("agent --help:\n%s", errs)
	}
}

func TestAPIFromTheEnvironment(t *testing.T) {
	t.Setenv("L4LB_API", "http://127.0.0.1:1")
	code, _, errs := runCLI("vips")
	if code != 1 || !strings.Contains(errs, "cannot reach the l4lb agent at 127.0.0.1:1") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	// The flag wins over the environment.
	_, _, errs = runCLI("vips", "--api", "127.0.0.2:2")
	if !strings.Contains(errs, "at 127.0.0.2:2") {
		t.Fatalf("--api did not win over L4LB_API: %q", errs)
	}
}

func TestAPIAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:1":            "127.0.0.1:1",
		"localhost":              "localhost:62080",
		"http://10.0.0.1:62080/": "10.0.0.1:62080",
		"::1":                    "[::1]:62080",
		"[::1]":                  "[::1]:62080",
		"http://[::1]:5":         "[::1]:5",
		"https://10.0.0.1":       "",
		"10.0.0.1/v1":            "",
		"":                       "",
	} {
		var a apiAddr
		err := a.Set(in)
		if (err == nil) != (want != "") || (err == nil && string(a) != want) {
			t.Errorf("Set(%q) = %q, %v; want %q", in, a, err, want)
		}
	}
}

func FuzzAPIAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1:1", "localhost", "http://[::1]:5/", "a/b", "http://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var a apiAddr
		if err := a.Set(s); err != nil {
			return
		}
		if _, _, err := net.SplitHostPort(string(a)); err != nil {
			t.Fatalf("Set(%q) accepted %q, which is not host:port: %v", s, a, err)
		}
	})
}
