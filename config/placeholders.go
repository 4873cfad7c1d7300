package config

import (
	"os"
	"reflect"
	"strconv"
	"strings"
)

// resolvePlaceholders replaces {env.NAME} and {file./path} in every string
// value, so secrets need never be written in the file itself. A missing
// variable or file is a problem naming the placeholder, never its value.
func (v *validator) resolvePlaceholders(cfg *Config) {
	v.walkStrings(reflect.ValueOf(cfg).Elem(), "")
}

func (v *validator) walkStrings(rv reflect.Value, path string) {
	switch rv.Kind() {
	case reflect.Pointer:
		if !rv.IsNil() {
			v.walkStrings(rv.Elem(), path)
		}
	case reflect.Struct:
		t := rv.Type()
		for i := 0; i < t.NumField(); i++ {
			name := tagName(t.Field(i))
			if name == "" || name == "-" {
				continue
			}
			v.walkStrings(rv.Field(i), join(path, name))
		}
	case reflect.Slice:
		for i := 0; i < rv.Len(); i++ {
			p := path
			if rv.Index(i).Kind() == reflect.Struct {
				p = join(path, strconv.Itoa(i))
			}
			v.walkStrings(rv.Index(i), p)
		}
	case reflect.String:
		if s := rv.String(); strings.Contains(s, "{env.") || strings.Contains(s, "{file.") {
			rv.SetString(v.expand(s, path))
		}
	}
}

func (v *validator) expand(s, path string) string {
	var b strings.Builder
	for {
		start := strings.Index(s, "{")
		if start < 0 {
			break
		}
		end := strings.Index(s[start:], "}")
		if end < 0 {
			break
		}
		ph := s[start+1 : start+end]
		b.WriteString(s[:start])
		s = s[start+end+1:]
		switch {
		case strings.HasPrefix(ph, "env."):
			name := ph[len("env."):]
			val, ok := os.LookupEnv(name)
			if !ok {
				v.bad(path, "export "+name+" in Portico's environment (systemd: Environment= or EnvironmentFile=)", "environment variable %s is not set", name)
			}
			b.WriteString(val)
		case strings.HasPrefix(ph, "file."):
			file := v.resolve(ph[len("file."):])
			data, err := os.ReadFile(file)
			if err != nil {
				v.bad(path, "make the file readable by Portico", "cannot read %s: %v", file, unwrapPathErr(err))
			}
			b.WriteString(strings.TrimRight(string(data), "\r\n"))
		default:
			b.WriteString("{" + ph + "}")
		}
	}
	b.WriteString(s)
	return b.String()
}
