package vip

import (
	"fmt"
	"strings"
)

// DNSNames returns the two fully qualified names (with trailing dot) under
// which a named VIP answers, for the app path name ("/dcos-101/app2" or
// "dcos-101/app2") started by framework, under domain. An empty framework
// means DefaultFramework, an empty domain DefaultDomain.
//
// path is the app's path reversed, as DNS labels, lower-cased:
//
//	/dcos-101/app2 + marathon -> app2.dcos-101.marathon.l4lb.thisdcos.directory.
//
// flat is the name DC/OS used, kept for compatibility: the path's segments
// joined without separators, lower-cased, '_' turned into '-', any other
// character that is not a letter, digit or '-' dropped:
//
//	/dcos-101/app2 + marathon -> dcos-101app2.marathon.l4lb.thisdcos.directory.
//	/My_Group/web  + marathon -> my-groupweb.marathon.l4lb.thisdcos.directory.
//
// For a one-segment path both names are the same. When the joined segments
// are longer than a DNS label (63 characters) there is no flattened name and
// flat is empty; path is always set when err is nil. The framework must be a
// DNS label and the domain a DNS name; path must fit in 253 characters.
func DNSNames(name, framework, domain string) (path, flat string, err error) {
	path, flat, err = dnsNames(name, framework, domain)
	if err != nil {
		return "", "", fmt.Errorf("dns names of %q (framework %q, domain %q): %w", name, framework, domain, err)
	}
	return path, flat, nil
}

func dnsNames(name, framework, domain string) (string, string, error) {
	if !strings.HasPrefix(name, "/") {
		name = "/" + name
	}
	if err := checkName(name); err != nil {
		return "", "", err
	}
	suffix, err := nameSuffix(framework, domain)
	if err != nil {
		return "", "", err
	}
	path, flat := namesWithSuffix(name, suffix)
	if n := len(path) - 1; n > maxNameLen {
		return "", "", fmt.Errorf("name %q: %d characters: %w", path, n, ErrNameTooLong)
	}
	return path, flat, nil
}

// namesWithSuffix builds the path and flattened names of a validated name
// ("/dcos-101/app2") under suffix ("marathon.l4lb.thisdcos.directory.").
// flat is empty when the flattened label would not be a DNS label.
func namesWithSuffix(name, suffix string) (path, flat string) {
	rest := strings.TrimPrefix(name, "/")
	// Both names in one buffer: the path name, then the flattened label and
	// the suffix again; the two strings share it.
	var b strings.Builder
	b.Grow(2*(len(rest)+len(suffix)) + 2)
	for end := len(rest); ; {
		start := strings.LastIndexByte(rest[:end], '/') + 1
		b.WriteString(strings.ToLower(rest[start:end]))
		b.WriteByte('.')
		if start == 0 {
			break
		}
		end = start - 1
	}
	b.WriteString(suffix)
	pathLen := b.Len()
	labelLen := appendFlatLabel(&b, rest)
	if labelLen == 0 || labelLen > maxLabelLen {
		return b.String()[:pathLen], ""
	}
	b.WriteByte('.')
	b.WriteString(suffix)
	both := b.String()
	return both[:pathLen], both[pathLen:]
}

// nameSuffix returns "framework.domain." lower-cased, with defaults applied.
func nameSuffix(framework, domain string) (string, error) {
	if framework == "" {
		framework = DefaultFramework
	}
	if err := checkLabel(framework); err != nil {
		return "", fmt.Errorf("framework: %w", err)
	}
	domain, err := normaliseDomain(domain)
	if err != nil {
		return "", err
	}
	return strings.ToLower(framework) + "." + domain + ".", nil
}

// normaliseDomain lower-cases a DNS domain, drops its trailing dot, applies
// the default and checks its labels.
func normaliseDomain(domain string) (string, error) {
	if domain == "" {
		return DefaultDomain, nil
	}
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if len(domain) > maxNameLen {
		return "", fmt.Errorf("domain %q: %w", domain, ErrNameTooLong)
	}
	for _, label := range strings.Split(domain, ".") {
		if err := checkLabel(label); err != nil {
			return "", fmt.Errorf("domain %q: %w", domain, err)
		}
	}
	return domain, nil
}

// appendFlatLabel writes DC/OS's flattened label of path: its segments
// joined, lower-cased, '_' turned into '-', every character other than
// [a-z0-9-] ("/" included) dropped. It returns how many bytes it wrote.
func appendFlatLabel(b *strings.Builder, path string) int {
	n := 0
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + ('a' - 'A'))
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		case c == '_':
			b.WriteByte('-')
		default:
			continue
		}
		n++
	}
	return n
}
