package redisstorage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

// # The Cluster layout
//
// On a Redis Cluster a script may only touch keys it declares, all in one
// hash slot, so the tree index of the standalone layout (one script that
// walks and updates every ancestor directory) cannot be used. Instead
// (P is the prefix, T a hash tag, see hashTag):
//
//	P:v:{T}<key>  HASH   {value, modified}, as in the standalone layout
//	P:m:{T}<dir>  STRING newest modification time below dir (unix µs)
//	P:l:{T}<name> STRING lock owner token, with a TTL
//
// The value and the directory marker of one path carry the same tag, so
// whether a path is a file or a directory is decided by one script in one
// slot: storing a file checks that no marker exists at its path, and
// marking a directory checks that no file exists at its path. A Store
// marks the ancestors top down, then writes the value; each step is
// atomic, the whole is not, which costs at worst a directory marker left
// behind by a Store that failed.
//
// Listing needs no index: List scans the values below the directory on
// every master (SCAN with a pattern, then an exact prefix check), so what
// it returns is always what is stored. It is the one operation whose cost
// grows with the data; certmagic lists rarely (account lookup, storage
// cleaning), and Portico for its ledger and on-demand names.
//
// Tags keep a certificate together: every key under
// "certificates*/<issuer>/<name>/" (certificate, key, pair, metadata) and
// certmagic's issuance lock "issue_cert_<name>" are tagged with <name>, so
// they live in one slot. Every other key is tagged with its own path, which
// spreads the fleet-wide keys (ledger, order slots, ticket keys, budget)
// over the cluster.

// markDirLua marks a directory of a Store on its way down.
//
// KEYS[1] value key and KEYS[2] marker key of the directory,
// ARGV[1] modification time.
const markDirLua = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('ERR cannot store below a file')
end
local old = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > old then redis.call('SET', KEYS[2], ARGV[1]) end
return 1
`

// storeFileLua writes a value unless its path is a directory.
//
// KEYS[1] value key, KEYS[2] marker key of the same path, ARGV[1] value,
// ARGV[2] modification time.
const storeFileLua = `
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('ERR cannot store a value at a directory')
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'modified', ARGV[2])
return 1
`

// hashTag is the Cluster hash tag of a storage path (see above). Braces
// are replaced so that the tag ends where the layout says it does.
func hashTag(p string) string {
	parts := strings.SplitN(p, "/", 4)
	if len(parts) >= 3 && strings.HasPrefix(parts[0], "certificates") {
		p = parts[2]
	}
	return tagSafe(p)
}

// lockTag is the hash tag of a lock: certmagic's issuance lock of a name
// joins that name's certificate files.
func lockTag(name string) string {
	if domain, ok := strings.CutPrefix(name, "issue_cert_"); ok {
		return tagSafe(certmagic.StorageKeys.Safe(domain))
	}
	return tagSafe(name)
}

func tagSafe(s string) string {
	if s == "" {
		return "_"
	}
	return strings.NewReplacer("{", "(", "}", ")").Replace(s)
}

func (s *Storage) clusterKey(kind, p string) string {
	return s.prefix + ":" + kind + ":{" + hashTag(p) + "}" + p
}

// clusterPath is the storage path in a Cluster key of the given kind, as
// returned by SCAN.
func (s *Storage) clusterPath(kind, key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, s.prefix+":"+kind+":{")
	if !ok {
		return "", false
	}
	i := strings.IndexByte(rest, '}')
	if i < 0 {
		return "", false
	}
	return rest[i+1:], true
}

func (s *Storage) clusterStore(ctx context.Context, k string, value []byte, now int64) error {
	parts := strings.Split(k, "/")
	dir := ""
	for _, part := range parts[:len(parts)-1] {
		dir = path.Join(dir, part)
		err := s.scripts.markDir.Run(ctx, s.client,
			[]string{s.clusterKey("v", dir), s.clusterKey("m", dir)}, now).Err()
		if err != nil {
			return err
		}
	}
	vk := s.clusterKey("v", k)
	return s.writeAcked(ctx, vk, s.scripts.storeFile, []string{vk, s.clusterKey("m", k)}, value, now)
}

func (s *Storage) clusterDelete(ctx context.Context, k string) error {
	var del []string
	if k != "" {
		del = append(del, s.clusterKey("v", k), s.clusterKey("m", k))
	}
	below, err := s.scanBelow(ctx, k, "v", "m")
	if err != nil {
		return err
	}
	del = append(del, below...)
	// One DEL per key: the keys are in many slots.
	_, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, key := range del {
			p.Del(ctx, key)
		}
		return nil
	})
	return err
}

// scanBelow returns the keys of the given kinds whose paths are below dir
// ("" is the root), from every master.
func (s *Storage) scanBelow(ctx context.Context, dir string, kinds ...string) ([]string, error) {
	var (
		mu  sync.Mutex
		out []string
	)
	base := ""
	if dir != "" {
		base = dir + "/"
	}
	for _, kind := range kinds {
		pattern := s.prefix + ":" + kind + ":{*}" + globEscape(base) + "*"
		err := s.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			it := c.Scan(ctx, 0, pattern, 1000).Iterator()
			for it.Next(ctx) {
				// The pattern's '*' in the tag may match too much;
				// the path decides.
				if p, ok := s.clusterPath(kind, it.Val()); ok && strings.HasPrefix(p, base) {
					mu.Lock()
					out = append(out, it.Val())
					mu.Unlock()
				}
			}
			return it.Err()
		})
		if err != nil {
			return nil, fmt.Errorf("scanning the %q keys of every master: %w", kind, err)
		}
	}
	return out, nil
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (s *Storage) clusterList(ctx context.Context, dir, k string, recursive bool) ([]string, error) {
	keys, err := s.scanBelow(ctx, k, "v")
	if err != nil {
		return nil, fmt.Errorf("redis list %q: %w", dir, err)
	}
	if len(keys) == 0 {
		n, err := s.client.Exists(ctx, s.clusterKey("m", k)).Result()
		if err != nil {
			return nil, fmt.Errorf("redis list %q: %w", dir, err)
		}
		if n > 0 || k == "" {
			return []string{}, nil // an emptied directory
		}
		if n, err = s.client.Exists(ctx, s.clusterKey("v", k)).Result(); err != nil {
			return nil, fmt.Errorf("redis list %q: %w", dir, err)
		}
		if n > 0 {
			return nil, nil // a file
		}
		return nil, fmt.Errorf("redis list %q: %w", dir, fs.ErrNotExist)
	}
	base := ""
	if k != "" {
		base = k + "/"
	}
	seen := map[string]bool{}
	for _, key := range keys {
		p, _ := s.clusterPath("v", key)
		rel := strings.TrimPrefix(p, base)
		if !recursive {
			rel, _, _ = strings.Cut(rel, "/")
			seen[rel] = true
			continue
		}
		// the file and the directories leading to it, as FileStorage
		for i, c := range rel {
			if c == '/' {
				seen[rel[:i]] = true
			}
		}
		seen[rel] = true
	}
	out := make([]string, 0, len(seen))
	for rel := range seen {
		out = append(out, path.Join(dir, rel))
	}
	sort.Strings(out)
	return out, nil
}

func (s *Storage) clusterStat(ctx context.Context, key, k string) (certmagic.KeyInfo, error) {
	var (
		size     *redis.IntCmd
		modified *redis.StringCmd
		newest   *redis.StringCmd
	)
	vk, mk := s.clusterKey("v", k), s.clusterKey("m", k)
	// One slot, so one MULTI/EXEC: size and time of one version.
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		size = p.HStrLen(ctx, vk, fieldValue)
		modified = p.HGet(ctx, vk, fieldModified)
		newest = p.Get(ctx, mk)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return certmagic.KeyInfo{}, fmt.Errorf("redis stat %q: %w", key, err)
	}
	m, err := modified.Result()
	terminal := err == nil
	if !terminal {
		if m, err = newest.Result(); err != nil {
			return certmagic.KeyInfo{}, fmt.Errorf("redis stat %q: %w", key, fs.ErrNotExist)
		}
	}
	us, err := strconv.ParseInt(m, 10, 64)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("redis stat %q: corrupt modified time %q", key, m)
	}
	info := certmagic.KeyInfo{Key: key, Modified: time.UnixMicro(us), IsTerminal: terminal}
	if terminal {
		info.Size = size.Val()
	}
	return info, nil
}
