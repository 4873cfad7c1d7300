package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
)

// termsOfService reads the terms-of-service URL from an ACME directory.
func termsOfService(ctx context.Context, directoryURL string, roots *x509.CertPool) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, directoryURL, nil)
	if err != nil {
		return "", err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("get ACME directory: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("get ACME directory %s: HTTP %d", directoryURL, resp.StatusCode)
	}
	var dir struct {
		Meta struct {
			TermsOfService string `json:"termsOfService"`
		} `json:"meta"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		return "", fmt.Errorf("decode ACME directory %s: %w", directoryURL, err)
	}
	return dir.Meta.TermsOfService, nil
}
