package main

import (
	"bytes"
	"encoding/base64"
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
		{"vips bad output", []string{"vips", "-o", "yaml"}, 1, "", `-o "yaml": want text or json`, true},
		{"members, agent down", []string{"members", "-o", "json", "--api", "127.0.0.1:1"}, 1, "", "cannot reach the l4lb agent", true},
		{"leave, agent down", []string{"leave", "--api", "127.0.0.1:1"}, 1, "", "cannot reach the l4lb agent", true},
		{"members extra arg", []string{"members", "x"}, 2, "", "want no arguments", false},
		{"agent bad dataplane", []string{"agent", "--dataplane", "ebpf", "--state-dir", "/nonexistent"}, 1, "", `--dataplane "ebpf": want ipvs, nftables, auto or none`, true},
		{"agent bad cidr", []string{"agent", "--vip-cidr", "11.0.0.1/8"}, 1, "", "host bits set", true},
		{"agent bad ip vip cidrs", []string{"agent", "--ip-vip-cidrs", "10.0.0.0/8,nonsense"}, 1, "", `--ip-vip-cidrs "nonsense"`, true},
		{"agent bad log level", []string{"agent", "--log-level", "loud"}, 1, "", "--log-level", true},
		{"agent missing config", []string{"agent", "--config", "/nonexistent/agent.json"}, 1, "", "config file", true},
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
