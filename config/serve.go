package config

import (
	"strings"

	"github.com/BurntSushi/toml"
)

// somethingToServe refuses a file without any [[site]], [on_demand] or
// [[certificate]]: an empty, truncated or wrong file would otherwise start
// (or, on a reload, replace the running config) and serve nothing. A
// central validation server says so with validation_server = true.
func (v *validator) somethingToServe(md toml.MetaData, data []byte, cfg *Config) {
	if md.IsDefined("site") || md.IsDefined("on_demand") || md.IsDefined("certificate") || cfg.ACME.ValidationServer {
		return
	}
	const fix = `add a [[site]] with hosts and upstreams (see examples/ and README.md), or pass the right file with -config; a central validation server sets validation_server = true in [acme]`
	if len(strings.TrimSpace(string(data))) == 0 {
		v.problems = append(v.problems, Problem{File: v.file, Msg: "the file is empty: nothing to serve", Fix: fix})
		return
	}
	v.problems = append(v.problems, Problem{File: v.file,
		Msg: "nothing to serve: the file has no [[site]], [on_demand] or [[certificate]] (a truncated file would drop every site)", Fix: fix})
}
