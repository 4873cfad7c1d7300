package config_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/portico-proxy/portico/config"
)

// TestRedisTopologyProblems covers validate's checks of the three ways to
// find Redis: exactly one form, Sentinel's master name, addresses, and
// the options that only Sentinel and Cluster take.
func TestRedisTopologyProblems(t *testing.T) {
	const st = "[storage]\nbackend = \"redis\"\n"
	const sentinels = "redis_sentinels = [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]\n"
	tests := []struct {
		name, src, key, msg, fix string
	}{
		{"url and sentinels", st + "redis_url = \"redis://:s3cret@h:6379/0\" " + marker + "\n" + sentinels + "redis_master = \"portico\"\n",
			"storage.redis_url", "are alternatives: 2 of them", "keep one of"},
		{"sentinels and cluster", st + sentinels + "redis_master = \"portico\"\nredis_cluster = [\"10.0.0.1:7000\"]\nredis_url = \"\" " + marker + "\n",
			"storage.redis_url", "2 of them", "redis_sentinels with redis_master"},
		{"sentinel without master", st + sentinels + "redis_master = \"\" " + marker + "\n",
			"storage.redis_master", "Sentinel needs the master's name", "sentinel monitor"},
		{"master without sentinels", st + "redis_master = \"portico\"\nredis_sentinels = [] " + marker + "\n",
			"storage.redis_sentinels", "no sentinels", "redis_sentinels = ["},
		{"sentinel address without port", st + "redis_sentinels = [\"10.0.0.1\"] " + marker + "\nredis_master = \"portico\"\n",
			"storage.redis_sentinels", `"10.0.0.1" is not host:port`, "10.0.0.1:26379"},
		{"cluster address with a bad port", st + "redis_cluster = [\"10.0.0.1:70000\"] " + marker + "\n",
			"storage.redis_cluster", "not a number from 1 to 65535", "host:port"},
		{"cluster address without host", st + "redis_cluster = [\":7000\"] " + marker + "\n",
			"storage.redis_cluster", "has no host", "host:port"},
		{"cluster address twice", st + "redis_cluster = [\"a:7000\", \"a:7000\"] " + marker + "\n",
			"storage.redis_cluster", "listed twice", "once"},
		{"cluster with a database", st + "redis_cluster = [\"a:7000\"]\nredis_db = 2 " + marker + "\n",
			"storage.redis_db", "redis_db = 2 with a Cluster", "only database 0"},
		{"cluster with a master name", st + "redis_cluster = [\"a:7000\"]\nredis_master = \"x\" " + marker + "\n",
			"storage.redis_master", "for Sentinel", "no single master"},
		{"url with a separate password", st + "redis_url = \"redis://h:6379/0\"\nredis_password = \"s3cret\" " + marker + "\n",
			"storage.redis_password", "with redis_url it would be ignored", "put it in redis_url"},
		{"negative database", st + sentinels + "redis_master = \"portico\"\nredis_db = -1 " + marker + "\n",
			"storage.redis_db", "negative", "positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := acmeOK + siteOK + tt.src
			path, _ := writeConfig(t, src, nil)
			_, err := config.Parse(path, []byte(src))
			errs := problemsOf(t, err)
			if len(errs) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(errs), err)
			}
			p := errs[0]
			if p.Key != tt.key || !strings.Contains(p.Msg, tt.msg) || !strings.Contains(p.Fix, tt.fix) {
				t.Errorf("problem = %s: %s (fix: %s); want %s: …%s… (fix: …%s…)", p.Key, p.Msg, p.Fix, tt.key, tt.msg, tt.fix)
			}
			if line := markedLine(t, src); p.Line != line {
				t.Errorf("Line = %d, want %d", p.Line, line)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error repeats the password: %v", err)
			}
		})
	}
}

// TestRedisTopologyAccepted parses the README's Sentinel and Cluster
// examples, with the password from the environment.
func TestRedisTopologyAccepted(t *testing.T) {
	t.Setenv("PORTICO_TEST_REDIS_PASSWORD", "hunter2")
	sentinel := acmeOK + siteOK + `[storage]
backend = "redis"
redis_sentinels = ["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"]
redis_master = "portico"
redis_password = "{env.PORTICO_TEST_REDIS_PASSWORD}"
redis_db = 2
`
	cfg, _ := mustParse(t, sentinel, nil)
	s := cfg.Storage
	if !slices.Equal(s.RedisSentinels, []string{"10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"}) ||
		s.RedisMaster != "portico" || s.RedisPassword != "hunter2" || s.RedisDB != 2 || s.RedisURL != "" {
		t.Errorf("Sentinel storage = %+v", s)
	}
	cluster := acmeOK + siteOK + `[storage]
backend = "redis"
redis_cluster = ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]
redis_username = "portico"
redis_password = "{env.PORTICO_TEST_REDIS_PASSWORD}"
redis_tls = true
`
	cfg, _ = mustParse(t, cluster, nil)
	s = cfg.Storage
	if len(s.RedisCluster) != 3 || s.RedisUsername != "portico" || s.RedisPassword != "hunter2" || !s.RedisTLS {
		t.Errorf("Cluster storage = %+v", s)
	}
}
