package config

import (
	"net"
	"strconv"
)

// validateRedisTopology checks the three ways of finding Redis (redis_url,
// redis_sentinels + redis_master, redis_cluster) and the options that
// belong to Sentinel and Cluster. It reports whether it has dealt with the
// storage section; when only redis_url (or nothing) is set, the caller
// checks the URL as it always has.
func (v *validator) validateRedisTopology(s *Storage) bool {
	url, sentinel, cluster := s.RedisURL != "", len(s.RedisSentinels) > 0, len(s.RedisCluster) > 0
	forms := 0
	for _, set := range []bool{url, sentinel, cluster} {
		if set {
			forms++
		}
	}
	const one = "keep one of redis_url (one server), redis_sentinels with redis_master (Sentinel) or redis_cluster (Cluster)"
	if forms > 1 {
		v.bad("storage.redis_url", one, "redis_url, redis_sentinels and redis_cluster are alternatives: %d of them are set", forms)
		return true
	}
	if !sentinel && !cluster {
		// redis_url alone carries user, password, TLS and database.
		for _, o := range []struct {
			key string
			set bool
		}{
			{"redis_master", s.RedisMaster != ""},
			{"redis_username", s.RedisUsername != ""},
			{"redis_password", s.RedisPassword != ""},
			{"redis_tls", s.RedisTLS},
			{"redis_db", s.RedisDB != 0},
		} {
			if o.set && url {
				v.bad("storage."+o.key, "put it in redis_url (rediss://user:password@host:port/db), or use redis_sentinels or redis_cluster",
					"%s is for Sentinel and Cluster; with redis_url it would be ignored", o.key)
			}
		}
		if s.RedisMaster != "" && !url {
			v.bad("storage.redis_sentinels", `list the sentinels: redis_sentinels = ["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"]`,
				"redis_master is set but no sentinels to ask for it")
			return true
		}
		return false
	}
	if sentinel {
		v.redisAddrs("storage.redis_sentinels", s.RedisSentinels, "26379")
		if s.RedisMaster == "" {
			v.bad("storage.redis_master", `set redis_master to the name the sentinels monitor (their "sentinel monitor <name> ..." line)`,
				"missing: Sentinel needs the master's name")
		}
	}
	if cluster {
		v.redisAddrs("storage.redis_cluster", s.RedisCluster, "7000")
		if s.RedisMaster != "" {
			v.bad("storage.redis_master", "remove redis_master: a Cluster has no single master", "redis_master is for Sentinel")
		}
		if s.RedisDB != 0 {
			v.bad("storage.redis_db", "remove redis_db: a Cluster has only database 0", "redis_db = %d with a Cluster", s.RedisDB)
		}
	}
	if s.RedisDB < 0 {
		v.bad("storage.redis_db", "use 0 or a positive database number", "redis_db = %d is negative", s.RedisDB)
	}
	return true
}

// redisAddrs checks that every address is host:port.
func (v *validator) redisAddrs(key string, addrs []string, port string) {
	fix := `write host:port, e.g. "10.0.0.1:` + port + `"`
	seen := map[string]bool{}
	for _, a := range addrs {
		host, p, err := net.SplitHostPort(a)
		n, perr := strconv.Atoi(p)
		switch {
		case err != nil:
			v.bad(key, fix, "%q is not host:port", a)
		case host == "":
			v.bad(key, fix, "%q has no host", a)
		case perr != nil || n < 1 || n > 65535:
			v.bad(key, fix, "%q: port %q is not a number from 1 to 65535", a, p)
		case seen[a]:
			v.bad(key, "list each address once", "%q is listed twice", a)
		}
		seen[a] = true
	}
}
