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
