package storagetest_test

import (
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/portico-proxy/portico/tlsmgr/storage/storagetest"
)

// TestFileStorage runs the suite against certmagic's own FileStorage,
// the reference implementation: an assertion it fails is an assertion
// certmagic does not rely on.
func TestFileStorage(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) certmagic.Storage {
		return &certmagic.FileStorage{Path: t.TempDir()}
	})
}
