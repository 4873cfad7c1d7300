package tlsmgr

import (
	"context"
	"fmt"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	redisstorage "github.com/portico-proxy/portico/tlsmgr/storage/redis"
)

// OpenStorage opens the configured backend. It does not wait for a remote
// backend to answer: Portico starts with storage down and connects later.
func OpenStorage(s config.Storage, logger *zap.Logger) (certmagic.Storage, error) {
	switch s.Backend {
	case "file", "":
		return &certmagic.FileStorage{Path: s.Path}, nil
	case "redis":
		st, err := redisstorage.New(redisstorage.Options{
			URL:        s.RedisURL,
			Sentinels:  s.RedisSentinels,
			MasterName: s.RedisMaster,
			Cluster:    s.RedisCluster,
			Username:   s.RedisUsername,
			Password:   s.RedisPassword,
			TLS:        s.RedisTLS,
			DB:         s.RedisDB,
			Prefix:     s.Prefix,
			Logger:     logger.Named("redis"),
		})
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		return st, nil
	}
	return nil, fmt.Errorf("storage backend %q is not supported", s.Backend)
}

// pinger is a storage that can say whether it is reachable.
type pinger interface {
	Ping(ctx context.Context) error
}

// upReporter is a storage that tracks its own reachability (the Redis
// backend: from every command and a periodic PING).
type upReporter interface {
	Up() bool
}

// closer is a storage holding connections to release at Stop.
type closer interface {
	Close() error
}

// the Redis backend reads a certificate's files in one round trip
var _ batchLoader = (*redisstorage.Storage)(nil)
