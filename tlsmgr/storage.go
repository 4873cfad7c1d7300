package tlsmgr

import (
	"fmt"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// OpenStorage opens the configured backend. It does not wait for a remote
// backend to answer: Portico starts with storage down and connects later.
func OpenStorage(s config.Storage, logger *zap.Logger) (certmagic.Storage, error) {
	switch s.Backend {
	case "file", "":
		return &certmagic.FileStorage{Path: s.Path}, nil
	}
	return nil, fmt.Errorf("storage backend %q is not supported", s.Backend)
}
