package config

// DNS configures the dns-01 challenge: which DNS provider's API Portico uses
// to publish the _acme-challenge TXT record, and where it checks that the
// record has propagated. It appears as [acme.dns] and as a per-site [site.dns].
type DNS struct {
	// Provider is "cloudflare", "route53" or "rfc2136".
	Provider string `toml:"provider"`
	// PropagationTimeout bounds the wait for the TXT record to be visible.
	PropagationTimeout Duration `toml:"propagation_timeout"`
	// Resolvers are where propagation is checked ("1.1.1.1:53").
	Resolvers []string `toml:"resolvers"`

	// Cloudflare: an API token with Zone.DNS edit permission.
	APIToken string `toml:"api_token"`

	// Route 53: static credentials, or the AWS default chain when empty.
	Region          string `toml:"region"`
	AccessKeyID     string `toml:"access_key_id"`
	SecretAccessKey string `toml:"secret_access_key"`
	HostedZoneID    string `toml:"hosted_zone_id"`

	// RFC 2136 (dynamic updates to your own DNS server), with TSIG.
	Server  string `toml:"server"`
	KeyName string `toml:"key_name"`
	KeyAlg  string `toml:"key_alg"`
	Key     string `toml:"key"`
}

// DNSProviders are the dns-01 providers Portico supports.
func DNSProviders() []string { return []string{"cloudflare", "route53", "rfc2136"} }
