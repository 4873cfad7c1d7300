package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
)

// CheckHost reports whether h (already lower-cased) is a hostname Portico can
// route and get a certificate for: a DNS name of letter-digit-hyphen labels,
// optionally with "*" as its whole first label, or an IP address.
func CheckHost(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	if len(h) > 253 {
		return errors.New("longer than 253 characters")
	}
	labels := strings.Split(h, ".")
	for i, l := range labels {
		if l == "*" && i == 0 {
			if len(labels) < 3 {
				return errors.New("a wildcard needs at least two labels after *, e.g. *.example.net")
			}
			continue
		}
		if err := checkLabel(l); err != nil {
			return fmt.Errorf("label %q: %w", l, err)
		}
	}
	return nil
}

func checkLabel(l string) error {
	if l == "" {
		return errors.New("empty label (two dots in a row?)")
	}
	if len(l) > 63 {
		return errors.New("longer than 63 characters")
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return errors.New("starts or ends with a hyphen")
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("character %q is not allowed", c)
		}
	}
	return nil
}

// CertificateNames loads a PEM certificate chain and key the operator brings
// and returns the names the leaf covers. It fails if the key does not match.
func CertificateNames(certFile, keyFile string) ([]string, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("both cert and key are required")
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load %s and %s: %w", certFile, keyFile, err)
	}
	leaf := pair.Leaf
	names := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = append(names, leaf.Subject.CommonName)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s names no host", certFile)
	}
	return names, nil
}

// The wildcard rule, in one place for config, proxy and tlsmgr: "*.x"
// covers every name of exactly one more label under x ("a.x", not "x" nor
// "a.b.x"), as a certificate's wildcard does (RFC 6125 §6.4.3).

// WildcardSuffix returns what a name shares with the wildcard that covers
// it: ".example.net" for "a.example.net". ok is false for a name of one
// label, which no wildcard covers. For a wildcard host ("*.example.net") it
// returns the same suffix, so a table keyed by suffix is looked up with a
// slice of the name (no allocation).
func WildcardSuffix[T string | []byte](name T) (suffix T, ok bool) {
	for i := 0; i < len(name); i++ {
		if name[i] == '.' {
			if i == 0 {
				break
			}
			return name[i:], true
		}
	}
	return suffix, false
}

// WildcardFor returns the wildcard host that covers name: "*.example.net"
// for "a.example.net"; ok is false for a name of one label.
func WildcardFor(name string) (string, bool) {
	s, ok := WildcardSuffix(name)
	if !ok {
		return "", false
	}
	return "*" + s, true
}

// HostCovers reports whether host (a name, or a wildcard "*.parent")
// covers name, ignoring case.
func HostCovers(host, name string) bool {
	if strings.EqualFold(host, name) {
		return true
	}
	if len(host) < 3 || host[0] != '*' || host[1] != '.' {
		return false
	}
	s, ok := WildcardSuffix(name)
	return ok && strings.EqualFold(host[1:], s)
}
