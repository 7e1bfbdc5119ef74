// Package config holds the small pieces of configuration handling that the
// l4lb command shares: a JSON config file that sets flags, list and prefix
// parsing with errors that name the flag, and the logger.
package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
)

// ApplyFile sets, from a JSON object of flag names to values, every flag of
// fs that the command line did not set. Values may be strings, numbers,
// booleans or lists of strings (joined with commas). An unknown name or a bad
// value is an error that names the file and the key.
func ApplyFile(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("config file %s: not a JSON object: %w", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "config" || fs.Lookup(k) == nil {
			return fmt.Errorf("config file %s: unknown setting %q (settings are the agent's flag names)", path, k)
		}
		if set[k] {
			continue
		}
		v, err := flagValue(raw[k])
		if err != nil {
			return fmt.Errorf("config file %s: %q: %w", path, k, err)
		}
		if err := fs.Set(k, v); err != nil {
			return fmt.Errorf("config file %s: %q: %w", path, k, err)
		}
	}
	return nil
}

func flagValue(m json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(m, &v); err != nil {
		return "", err
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return "", fmt.Errorf("list item %d is not a string", i)
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	default:
		return "", fmt.Errorf("value must be a string, number, boolean or list of strings")
	}
}

// SplitList splits a comma-separated flag value, dropping empty items and
// spaces around items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ParsePrefix parses a CIDR flag value of the given family.
func ParsePrefix(flagName, s string, v6 bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("--%s %q: %w", flagName, s, err)
	}
	if p.Addr().Is6() != v6 || p.Addr().Is4In6() {
		fam := "IPv4"
		if v6 {
			fam = "IPv6"
		}
		return netip.Prefix{}, fmt.Errorf("--%s %q: want an %s range", flagName, s, fam)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("--%s %q: host bits set; did you mean %s?", flagName, s, p.Masked())
	}
	return p, nil
}

// ParseAddrs parses a comma-separated list of IP addresses (IPv4, or IPv6
// without brackets or zone), IPv4-mapped ones unmapped; duplicates are an
// error, and so are addresses that no other host can reach (unspecified,
// loopback, multicast, link-local).
func ParseAddrs(flagName, s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, item := range SplitList(s) {
		a, err := netip.ParseAddr(item)
		switch {
		case err != nil:
			return nil, fmt.Errorf("--%s %q: not an IP address (want 192.0.2.10 or 2001:db8::10)", flagName, item)
		case a.Zone() != "":
			return nil, fmt.Errorf("--%s %q: an address with a zone cannot be published", flagName, item)
		}
		a = a.Unmap()
		switch {
		case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return nil, fmt.Errorf("--%s %q: %s cannot be reached from other hosts (unspecified, loopback, multicast, link-local or broadcast)", flagName, item, a)
		case slices.Contains(out, a):
			return nil, fmt.Errorf("--%s %q: %s is given twice", flagName, s, a)
		}
		out = append(out, a)
	}
	return out, nil
}

// Logger builds the agent's logger.
func Logger(level, format string, w io.Writer) (*logrus.Entry, error) {
	l := logrus.New()
	l.SetOutput(w)
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	l.SetLevel(lv)
	switch format {
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true, TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return logrus.NewEntry(l), nil
}
