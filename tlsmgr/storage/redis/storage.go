// Package redisstorage implements certmagic.Storage on Redis, so that a
// fleet of proxies shares certificates, ACME accounts and the locks that
// stop two nodes from ordering the same certificate at once.
//
// # Data model
//
// certmagic expects file-system semantics: keys are slash-separated
// paths, "directories" exist implicitly while they have descendants,
// and List/Stat/Delete operate on those directories. Redis has a flat
// key space, so this package keeps an explicit index next to the values
// (P is Options.Prefix):
//
//	P:v:<key>  HASH  {value, modified}  one per stored key ("file")
//	P:d:<dir>  ZSET  child name -> modified time (unix µs); the root is "P:d:"
//	P:l:<name> STRING lock owner token, with a TTL
//
// Every write that touches both values and index runs as one Lua script,
// so readers never observe an index entry without its value or the
// reverse, and a Store is seen either completely or not at all. List
// reads only the directory index of the path it is given (and, when
// recursive, of the directories below it), so its cost is proportional
// to the size of its answer: no KEYS and no SCAN are ever issued.
//
// The score of a child in its parent's ZSET is the newest modification
// time in that child's subtree, so a directory's Stat reports the time
// of its newest descendant. certmagic relies on this to pick the most
// recently used ACME account.
//
// Because the scripts discover the keys they touch by walking the index,
// they access keys not declared to Redis up front. That works on a
// standalone Redis (with or without replicas, and behind Sentinel, which
// uses this same layout) but not on Redis Cluster, which gets a layout of
// its own (cluster.go). Redis 6.2 or newer is required (ZADD GT).
//
// # Failover
//
// With Sentinel the master is looked up through the sentinels and
// followed across failovers; commands that fail for want of a master are
// retried for several seconds, long enough for a failover. Replication is
// asynchronous, so a Store waits until a replica has the value
// (replicas.go) whenever the master has replicas: a failover may lose a
// lock (at worst two nodes then order the same certificate) but never a
// stored certificate, key or account.
//
// # Fleets
//
// Several fleets can share one Redis (or one database) by using
// different prefixes; nothing a Storage does reads or writes outside its
// prefix.
//
// # Secrets
//
// The password in Options.URL never appears in errors returned by this
// package, in String, or in log messages: all of them use RedactURL.
package redisstorage

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultPrefix is the key prefix used when Options.Prefix is empty.
const DefaultPrefix = "portico"

// DefaultLockTTL is the lock expiry used when Options.LockTTL is zero.
// It bounds how long a crashed node can block others: a live holder
// keeps extending its lock, a dead one stops, and the lock then expires
// within this duration.
const DefaultLockTTL = 30 * time.Second

// MinLockTTL is the smallest accepted Options.LockTTL. Locks are
// refreshed every LockTTL/3; much below this a slow network round trip
// or a GC pause could let a live holder's lock expire.
const MinLockTTL = 100 * time.Millisecond

// unlockTimeout bounds the calls Unlock and Close make to Redis.
// certmagic calls Unlock with a context that is never cancelled, so
// without a bound an unreachable Redis would hang the caller forever.
const unlockTimeout = 10 * time.Second

// DefaultReplicaAckTimeout is the ReplicaAckTimeout used when it is zero.
const DefaultReplicaAckTimeout = 2 * time.Second

// failoverRetries is how often go-redis retries a command that failed
// for want of a master (connection refused, READONLY, CLUSTERDOWN...)
// on Sentinel and Cluster, with backoff capped at a second.
const failoverRetries = 20

// Options configures a Storage. Exactly one of URL, Sentinels and
// Cluster says where Redis is.
type Options struct {
	// URL locates a standalone server: redis://[user:password@]host[:port][/db]
	// or rediss:// for TLS. Query parameters accepted by
	// redis.ParseURL (timeouts, retries, pool size, ...) are honoured.
	// The password is never repeated in errors, logs or String: they
	// show the URL as RedactURL returns it.
	URL string

	// Sentinels are the host:port addresses of the Redis Sentinels that
	// watch MasterName. The master is looked up through them and
	// followed across failovers. The key layout is the standalone one,
	// so a fleet can move from one Redis to a Sentinel-managed group of
	// the same data without migrating anything.
	Sentinels  []string
	MasterName string

	// Cluster are seed addresses (host:port) of a Redis Cluster; the
	// rest of the cluster is discovered from them. Keys are hash-tagged
	// (see cluster.go), so data written by a standalone Storage is not
	// visible to a Cluster one and the reverse.
	Cluster []string

	// Username, Password, TLS and DB apply to Sentinels and Cluster
	// (a URL carries its own). DB must be 0 on a Cluster. The password
	// authenticates to the Redis servers, not to the sentinels.
	Username string
	Password string
	TLS      bool
	DB       int

	// ReplicaAckTimeout bounds how long a Store waits for the connected
	// replicas to acknowledge the write (WAIT) when the master has
	// replicas. A write not acknowledged in time is reported as failed, although
	// the master has it: a failover could lose it. It must stay below the
	// client's read timeout (3s unless a URL sets read_timeout), within
	// which go-redis reads the WAIT's reply. Default:
	// DefaultReplicaAckTimeout.
	ReplicaAckTimeout time.Duration

	// Prefix namespaces every key this Storage uses, so that several
	// fleets can share one Redis. It may contain letters, digits, '.',
	// '_' and '-'. Default: DefaultPrefix.
	Prefix string

	// LockTTL is how long a lock survives without being refreshed, and
	// hence how long a crashed holder blocks others. Holders refresh
	// their locks every LockTTL/3 for as long as they hold them.
	// Default: DefaultLockTTL; minimum MinLockTTL.
	LockTTL time.Duration

	// PingInterval is how often a background check asks Redis whether
	// it is reachable, so that an outage is noticed (and logged once)
	// even when no operation runs. Default: DefaultPingInterval;
	// negative disables the check.
	PingInterval time.Duration

	// Logger receives problems that cannot be returned to a caller,
	// such as a failed lock refresh. Default: no logging.
	Logger *zap.Logger
}

// Storage is a certmagic.Storage (with the optional TryLocker and
// LockLeaseRenewer interfaces) backed by Redis. It is safe for
// concurrent use. Create it with New.
type Storage struct {
	client       redis.UniversalClient
	cluster      *redis.ClusterClient // non-nil on a Cluster: hash-tagged key layout
	ackTimeout   time.Duration
	prefix       string
	lockTTL      time.Duration
	pollInterval time.Duration
	logger       *zap.Logger
	redactedURL  string
	tokenPrefix  string
	scripts      scripts

	mu    sync.Mutex
	locks map[string]*heldLock // by lock name; see lock.go

	health health // reachability, for the log and portico_storage_up; see health.go
}

// Interface guards: certmagic discovers the optional interfaces by type
// assertion, so a signature drift would silently disable them.
var (
	_ certmagic.Storage          = (*Storage)(nil)
	_ certmagic.TryLocker        = (*Storage)(nil)
	_ certmagic.LockLeaseRenewer = (*Storage)(nil)
)

// New returns a Storage for opts. It does not wait for Redis: connections
// are made lazily (by the first operation, or the background PING every
// PingInterval), so a proxy can start while Redis is unavailable and
// begins to use it once it is reachable. Use Ping to check connectivity
// explicitly, and Close to stop the background PING.
func New(opts Options) (*Storage, error) {
	client, cluster, where, err := newClient(opts)
	if err != nil {
		return nil, err
	}

	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !validPrefix(prefix) {
		client.Close()
		return nil, fmt.Errorf("redis storage: invalid prefix %q: only letters, digits, '.', '_' and '-' are allowed", prefix)
	}

	ttl := opts.LockTTL
	switch {
	case ttl == 0:
		ttl = DefaultLockTTL
	case ttl < MinLockTTL:
		client.Close()
		return nil, fmt.Errorf("redis storage: LockTTL %v is below the minimum of %v", ttl, MinLockTTL)
	}
	ack := opts.ReplicaAckTimeout
	if ack <= 0 {
		ack = DefaultReplicaAckTimeout
	}

	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}

	// The owner token starts with host and pid so that an operator
	// looking at a stuck lock in Redis can tell who holds it.
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown-host"
	}

	s := &Storage{
		client:       client,
		cluster:      cluster,
		ackTimeout:   ack,
		prefix:       prefix,
		lockTTL:      ttl,
		pollInterval: pollIntervalFor(ttl),
		logger:       logger.Named("redis_storage").With(zap.String("prefix", prefix)),
		redactedURL:  where,
		tokenPrefix:  host + "/" + strconv.Itoa(os.Getpid()) + "/",
		scripts:      newScripts(),
		locks:        make(map[string]*heldLock),
	}
	s.health.init(s, opts.PingInterval)
	return s, nil
}

// newClient builds the go-redis client for the one form of opts that
// is set, and describes where it points without any password.
func newClient(opts Options) (redis.UniversalClient, *redis.ClusterClient, string, error) {
	forms := 0
	for _, set := range []bool{opts.URL != "", len(opts.Sentinels) > 0, len(opts.Cluster) > 0} {
		if set {
			forms++
		}
	}
	switch {
	case forms == 0:
		return nil, nil, "", errors.New("redis storage: URL is required (or Sentinels, or Cluster)")
	case forms > 1:
		return nil, nil, "", errors.New("redis storage: set exactly one of URL, Sentinels and Cluster")
	}
	var tlsConf *tls.Config
	if opts.TLS {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	switch {
	case len(opts.Sentinels) > 0:
		if opts.MasterName == "" {
			return nil, nil, "", errors.New("redis storage: Sentinels need MasterName")
		}
		c := redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:    opts.MasterName,
			SentinelAddrs: opts.Sentinels,
			Username:      opts.Username,
			Password:      opts.Password,
			DB:            opts.DB,
			TLSConfig:     tlsConf,
			// A failover takes the sentinels' down-after time plus an
			// election, seconds in all; retrying with backoff for that
			// long lets in-flight operations land on the new master
			// instead of failing the order they belong to.
			MaxRetries:      failoverRetries,
			MaxRetryBackoff: time.Second,
		})
		where := fmt.Sprintf("sentinel master %q via %s", opts.MasterName, strings.Join(opts.Sentinels, ","))
		return c, nil, where, nil
	case len(opts.Cluster) > 0:
		if opts.DB != 0 {
			return nil, nil, "", errors.New("redis storage: a Cluster has only database 0")
		}
		c := redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:           opts.Cluster,
			Username:        opts.Username,
			Password:        opts.Password,
			TLSConfig:       tlsConf,
			MaxRedirects:    failoverRetries,
			MaxRetryBackoff: time.Second,
			// go-redis learns that a replica took over a dead master's
			// slots only by reloading the slot map (a connection error
			// does not trigger it); the default of a minute would fail
			// every write to those slots for that long.
			ClusterStateReloadInterval: time.Second,
		})
		return c, c, "cluster " + strings.Join(opts.Cluster, ","), nil
	}

	redacted := RedactURL(opts.URL)
	u, err := url.Parse(opts.URL)
	if err != nil {
		// url.Error repeats the whole URL, password included; keep only
		// the reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, nil, "", fmt.Errorf("redis storage: invalid URL %q: %v", redacted, err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, nil, "", fmt.Errorf("redis storage: invalid URL %q: scheme must be redis or rediss", redacted)
	}
	ropts, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, nil, "", fmt.Errorf("redis storage: invalid URL %q: %v", redacted, err)
	}
	return redis.NewClient(ropts), nil, redacted, nil
}

// pollIntervalFor derives how often a blocked Lock retries: a small
// fraction of the TTL, but at most once a second (like
// certmagic.FileStorage) and no more often than every 10ms.
func pollIntervalFor(ttl time.Duration) time.Duration {
	return min(max(ttl/20, 10*time.Millisecond), time.Second)
}

// Ping checks that Redis is reachable and accepts the configured
// credentials. A failure is left to the caller to report: the Storage
// records the outage (Up) without logging it.
func (s *Storage) Ping(ctx context.Context) error {
	if err := s.client.Ping(context.WithValue(ctx, quietKey{}, true)).Err(); err != nil {
		return fmt.Errorf("redis ping %s: %w", s.redactedURL, err)
	}
	return nil
}

// Close stops refreshing held locks, releases them (best effort, bounded
// by a timeout), and closes the connection pool. The Storage must not be
// used afterwards.
func (s *Storage) Close() error {
	s.health.close()
	s.releaseAllLocks()
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("redis close %s: %w", s.redactedURL, err)
	}
	return nil
}

// String identifies the storage in logs (certmagic logs it) without
// revealing the password.
func (s *Storage) String() string {
	return fmt.Sprintf("RedisStorage(%s, prefix=%q)", s.redactedURL, s.prefix)
}

// Store writes value at key, replacing any previous value atomically.
// Storing at a key that is a directory, or below a key that is a file,
// fails: certmagic.FileStorage cannot do either, and allowing it would
// make the key both a file and a directory.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	k := normalize(key)
	if k == "" {
		return fmt.Errorf("redis store %q: empty key", key)
	}
	now := time.Now().UnixMicro()
	var err error
	if s.cluster != nil {
		err = s.clusterStore(ctx, k, value, now)
	} else {
		err = s.writeAcked(ctx, s.valueKey(k), s.scripts.store, nil, s.prefix, k, value, now)
	}
	if err != nil {
		return fmt.Errorf("redis store %q: %w", key, err)
	}
	return nil
}

// Load returns the value stored at key. A missing key yields an error
// satisfying errors.Is(err, fs.ErrNotExist).
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := s.client.HGet(ctx, s.valueKey(normalize(key)), fieldValue).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redis load %q: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("redis load %q: %w", key, err)
	}
	return v, nil
}

// LoadMany reads several keys in one round trip (a pipeline): values[i]
// and errs[i] are what Load(keys[i]) returns, a missing key's error
// satisfying errors.Is(err, fs.ErrNotExist). The reads are not one
// snapshot: a Store between them may be seen by some and not others, as
// with consecutive Loads.
func (s *Storage) LoadMany(ctx context.Context, keys []string) (values [][]byte, errs []error) {
	values, errs = make([][]byte, len(keys)), make([]error, len(keys))
	cmds := make([]*redis.StringCmd, len(keys))
	_, perr := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.HGet(ctx, s.valueKey(normalize(k)), fieldValue)
		}
		return nil
	})
	for i, k := range keys {
		v, err := cmds[i].Bytes()
		switch {
		case errors.Is(err, redis.Nil):
			errs[i] = fmt.Errorf("redis load %q: %w", k, fs.ErrNotExist)
		case err != nil:
			errs[i] = fmt.Errorf("redis load %q: %w", k, err)
		case perr != nil && !errors.Is(perr, redis.Nil):
			errs[i] = fmt.Errorf("redis load %q: %w", k, perr)
		default:
			values[i] = v
		}
	}
	return values, errs
}

// Delete removes key and, if it is a directory, everything below it,
// atomically. Directories left empty are removed as well, as a directory
// only exists while it has descendants. Deleting a missing key is not an
// error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	if s.cluster != nil {
		if err := s.clusterDelete(ctx, normalize(key)); err != nil {
			return fmt.Errorf("redis delete %q: %w", key, err)
		}
		return nil
	}
	if err := s.scripts.delete.Run(ctx, s.client, nil, s.prefix, normalize(key)).Err(); err != nil {
		return fmt.Errorf("redis delete %q: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory. Errors (for
// example Redis being unreachable) report false, as the interface has no
// way to return them.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	k := normalize(key)
	n, err := s.client.Exists(ctx, s.valueKey(k), s.dirKey(k)).Result()
	if err != nil {
		s.logger.Warn("exists check failed", zap.String("key", key), zap.Error(err))
		return false
	}
	return n > 0
}

// List returns the keys directly inside the directory dir, or, if
// recursive, every key below it: files and the directories leading to
// them, which is what certmagic.FileStorage returns. The keys are sorted
// and are dir joined with the relative name (path.Join), again like
// FileStorage. Listing a missing directory yields an error satisfying
// errors.Is(err, fs.ErrNotExist); listing a file yields no keys and no
// error.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	if s.cluster != nil {
		return s.clusterList(ctx, dir, normalize(dir), recursive)
	}
	rec := "0"
	if recursive {
		rec = "1"
	}
	res, err := s.scripts.list.Run(ctx, s.client, nil, s.prefix, normalize(dir), rec).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redis list %q: %w", dir, err)
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("redis list %q: empty reply from list script", dir)
	}
	switch res[0] {
	case "none":
		return nil, fmt.Errorf("redis list %q: %w", dir, fs.ErrNotExist)
	case "file":
		return nil, nil
	case "dir":
	default:
		return nil, fmt.Errorf("redis list %q: unexpected reply %q from list script", dir, res[0])
	}
	keys := make([]string, 0, len(res)-1)
	for _, rel := range res[1:] {
		keys = append(keys, path.Join(dir, rel))
	}
	sort.Strings(keys)
	return keys, nil
}

// Stat describes key. Files report their size and the time of their last
// Store; directories report IsTerminal false and the time of the newest
// Store below them (deleting a descendant does not make a directory
// older). A missing key yields an error satisfying
// errors.Is(err, fs.ErrNotExist).
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	k := normalize(key)
	if s.cluster != nil {
		return s.clusterStat(ctx, key, k)
	}
	var (
		size     *redis.IntCmd
		modified *redis.StringCmd
		newest   *redis.ZSliceCmd
	)
	// MULTI/EXEC, so that a concurrent Store cannot pair one version's
	// size with another version's time.
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		size = p.HStrLen(ctx, s.valueKey(k), fieldValue)
		modified = p.HGet(ctx, s.valueKey(k), fieldModified)
		newest = p.ZRevRangeWithScores(ctx, s.dirKey(k), 0, 0)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return certmagic.KeyInfo{}, fmt.Errorf("redis stat %q: %w", key, err)
	}

	if m, err := modified.Result(); err == nil {
		us, err := strconv.ParseInt(m, 10, 64)
		if err != nil {
			return certmagic.KeyInfo{}, fmt.Errorf("redis stat %q: corrupt modified time %q", key, m)
		}
		return certmagic.KeyInfo{
			Key:        key,
			Modified:   time.UnixMicro(us),
			Size:       size.Val(),
			IsTerminal: true,
		}, nil
	}
	if zs := newest.Val(); len(zs) > 0 {
		return certmagic.KeyInfo{
			Key:        key,
			Modified:   time.UnixMicro(int64(zs[0].Score)),
			IsTerminal: false,
		}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("redis stat %q: %w", key, fs.ErrNotExist)
}

// Hash fields of a value key.
const (
	fieldValue    = "value"
	fieldModified = "modified"
)

// Key names. The standalone layout (also used with Sentinel) is the
// package comment's; a Cluster's is described in cluster.go. dirKey is
// what makes a path a directory: the index ZSET, or the Cluster marker.
func (s *Storage) valueKey(k string) string {
	if s.cluster != nil {
		return s.clusterKey("v", k)
	}
	return s.prefix + ":v:" + k
}

func (s *Storage) dirKey(k string) string {
	if s.cluster != nil {
		return s.clusterKey("m", k)
	}
	return s.prefix + ":d:" + k
}

func (s *Storage) lockKey(n string) string {
	if s.cluster != nil {
		return s.prefix + ":l:{" + lockTag(n) + "}" + n
	}
	return s.prefix + ":l:" + n
}

// validPrefix limits prefixes to characters that exclude the ':'
// separator, so that no two prefixes can produce the same Redis key.
func validPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, r := range p {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9',
			r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// normalize turns a certmagic key into the canonical form used in Redis
// keys: no leading, trailing or repeated slashes and no "." or ".."
// components, matching how FileStorage resolves keys to file names. The
// root directory is "".
func normalize(key string) string {
	return strings.TrimPrefix(path.Clean("/"+key), "/")
}
