package dnsprovider

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/libdns/libdns"
	"github.com/libdns/route53"

	"github.com/portico-proxy/portico/config"
)

// Why Route 53 is wrapped.
//
// libdns/route53 v1.6.0 builds its AWS client lazily, in (*Provider).init
// (client.go), on the first GetRecords/AppendRecords/SetRecords/
// DeleteRecords call, and does
//
//	cfg, err := config.LoadDefaultConfig(ctx, opts...)
//	if err != nil {
//		log.Fatalf("route53: unable to load AWS SDK config, %v", err)
//	}
//
// so a configuration the AWS SDK cannot load exits the whole proxy in the
// middle of a certificate order. That is the only log.Fatalf in the module.
// The options init passes are a retryer, the region, static credentials
// (only when both access_key_id and secret_access_key are set) and the
// shared-config profile (which Portico never sets); none of these can make
// LoadDefaultConfig fail, whatever their value. What makes it fail is the
// process environment the SDK reads alongside them, for example:
//
//   - AWS_PROFILE naming a profile absent from ~/.aws/config and
//     ~/.aws/credentials (the shared files become mandatory then);
//   - a malformed AWS_* variable: AWS_MAX_ATTEMPTS=x, AWS_RETRY_MODE=fast,
//     AWS_USE_FIPS_ENDPOINT=maybe, AWS_DEFAULTS_MODE=..., ...;
//   - AWS_CA_BUNDLE naming a file that cannot be read;
//   - a shared config file the SDK cannot parse or resolve (e.g. a profile
//     whose role_arn has no credential source).
//
// Check cannot see the environment, so New runs the same LoadDefaultConfig
// with the same options first and returns its failure as an error, and the
// wrapper below runs it again immediately before the library's own first
// init (the environment or the files may have changed since New), holding a
// lock so the library's unsynchronised lazy init also never races. After
// the first call has returned, the library's client exists and the guard
// costs one atomic load.
type route53Provider struct {
	p      *route53.Provider
	region string
	akid   string
	secret string

	ready atomic.Bool
	mu    sync.Mutex
}

func newRoute53(d *config.DNS) (*route53Provider, error) {
	w := &route53Provider{
		p: &route53.Provider{
			Region:          d.Region,
			AccessKeyId:     d.AccessKeyID,
			SecretAccessKey: d.SecretAccessKey,
			HostedZoneID:    d.HostedZoneID,
		},
		region: d.Region,
		akid:   d.AccessKeyID,
		secret: d.SecretAccessKey,
	}
	if err := w.preflight(context.Background()); err != nil {
		return nil, err
	}
	return w, nil
}

// preflight loads the AWS SDK configuration exactly as the library's init
// does and reports what would make init exit, plus a missing region (which
// would only fail at the first request, with a less helpful message).
func (w *route53Provider) preflight(ctx context.Context) error {
	opts := []func(*awsconfig.LoadOptions) error{}
	if w.region != "" {
		opts = append(opts, awsconfig.WithRegion(w.region))
	}
	if w.akid != "" && w.secret != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(w.akid, w.secret, "")))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return fmt.Errorf("route53: the AWS SDK cannot load its configuration from the environment (AWS_* variables, ~/.aws/config, ~/.aws/credentials): %s; fix or unset the offending variable or file",
			w.redact(err.Error()))
	}
	if cfg.Region == "" {
		return fmt.Errorf(`route53: no AWS region: set region in [acme.dns] (Route 53 is global, "us-east-1" works) or AWS_REGION`)
	}
	return nil
}

// redact removes secrets from an SDK error message: parse errors of the
// shared files may quote their lines.
func (w *route53Provider) redact(msg string) string {
	secrets := []string{w.secret, w.akid, os.Getenv("AWS_SECRET_ACCESS_KEY"), os.Getenv("AWS_SESSION_TOKEN"), os.Getenv("AWS_ACCESS_KEY_ID")}
	for _, s := range secrets {
		if len(s) >= 8 {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return msg
}

// enter guards a call into the library: until one call has completed it
// serialises calls and repeats the preflight check first. The returned
// function must be called when the library call returns.
func (w *route53Provider) enter(ctx context.Context) (done func(), err error) {
	if w.ready.Load() {
		return func() {}, nil
	}
	w.mu.Lock()
	if w.ready.Load() {
		w.mu.Unlock()
		return func() {}, nil
	}
	if err := w.preflight(ctx); err != nil {
		w.mu.Unlock()
		return nil, err
	}
	return func() {
		// The library's init ran (it runs first in every method and
		// either exits or sets the client), so later calls skip it.
		w.ready.Store(true)
		w.mu.Unlock()
	}, nil
}

// GetRecords implements libdns.RecordGetter.
func (w *route53Provider) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	done, err := w.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return w.p.GetRecords(ctx, zone)
}

// AppendRecords implements libdns.RecordAppender.
func (w *route53Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	done, err := w.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return w.p.AppendRecords(ctx, zone, recs)
}

// SetRecords implements libdns.RecordSetter.
func (w *route53Provider) SetRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	done, err := w.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return w.p.SetRecords(ctx, zone, recs)
}

// DeleteRecords implements libdns.RecordDeleter.
func (w *route53Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	done, err := w.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return w.p.DeleteRecords(ctx, zone, recs)
}

var (
	_ libdns.RecordGetter   = (*route53Provider)(nil)
	_ libdns.RecordAppender = (*route53Provider)(nil)
	_ libdns.RecordSetter   = (*route53Provider)(nil)
	_ libdns.RecordDeleter  = (*route53Provider)(nil)
)
