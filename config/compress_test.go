package config_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/portico-proxy/portico/config"
)

// [[site]] compress: known encodings, each once, in the site's order.

func TestSiteCompress(t *testing.T) {
	cfg, _ := mustParse(t, acmeOK+siteOK, nil)
	if len(cfg.Sites[0].Compress) != 0 {
		t.Errorf("Compress = %q by default, want none", cfg.Sites[0].Compress)
	}
	cfg, _ = mustParse(t, acmeOK+siteOK+`compress = ["zstd", "gzip"]`+"\n", nil)
	if want := []string{"zstd", "gzip"}; !slices.Equal(cfg.Sites[0].Compress, want) {
		t.Errorf("Compress = %q, want %q", cfg.Sites[0].Compress, want)
	}
}

func TestSiteCompressRefusals(t *testing.T) {
	for _, tt := range []struct{ name, src, msg, fix string }{
		{"unknown encoding", `compress = ["gzip", "br"]`, `unknown encoding "br"`, `"zstd", "gzip"`},
		{"duplicate", `compress = ["gzip", "zstd", "gzip"]`, `"gzip" is listed twice`, "once"},
		{"upper case", `compress = ["GZIP"]`, `unknown encoding "GZIP"`, "allowed"},
		{"a string", `compress = "gzip"`, "", "README.md"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := acmeOK + siteOK + tt.src + " " + marker + "\n"
			path, _ := writeConfig(t, src, nil)
			_, err := config.Parse(path, []byte(src))
			errs := problemsOf(t, err)
			if len(errs) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(errs), err)
			}
			p := errs[0]
			if p.Key != "site[1].compress" || !strings.Contains(p.Msg, tt.msg) || !strings.Contains(p.Fix, tt.fix) {
				t.Errorf("problem %q, want key site[1].compress, message with %q, fix with %q", p.Error(), tt.msg, tt.fix)
			}
			if line := markedLine(t, src); p.Line != line {
				t.Errorf("Line = %d, want %d (%v)", p.Line, line, p)
			}
		})
	}
}
