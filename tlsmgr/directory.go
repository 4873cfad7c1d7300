package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
)

// directory is what Portico reads from an ACME directory's meta.
type directory struct {
	Meta struct {
		TermsOfService          string   `json:"termsOfService"`
		ExternalAccountRequired bool     `json:"externalAccountRequired"`
		Profiles                any      `json:"profiles"`
		CAAIdentities           []string `json:"caaIdentities"`
	} `json:"meta"`
}

// termsOfService reads the terms-of-service URL from an ACME directory.
func termsOfService(ctx context.Context, directoryURL string, roots *x509.CertPool) (string, error) {
	dir, err := readDirectory(ctx, directoryURL, roots)
	return dir.Meta.TermsOfService, err
}

// readDirectory fetches an ACME directory.
func readDirectory(ctx context.Context, directoryURL string, roots *x509.CertPool) (directory, error) {
	var dir directory
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, directoryURL, nil)
	if err != nil {
		return dir, err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return dir, fmt.Errorf("get ACME directory: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return dir, fmt.Errorf("get ACME directory %s: HTTP %d", directoryURL, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		return dir, fmt.Errorf("decode ACME directory %s: %w", directoryURL, err)
	}
	return dir, nil
}
