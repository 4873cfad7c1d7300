package main

// README.md's configuration reference is checked against the schema: every
// key of config.Config (by its toml tags) is documented with its TOML type,
// no documented key is missing from the schema, and every default written
// as a plain literal is the default config.Load applies.

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// schemaKey is one leaf key of the schema, such as "acme.dns.provider".
type schemaKey struct {
	path  []string // Go field names from config.Config down to the key
	typ   reflect.Type
	table string // the table as the README heading names it: "acme.dns"
}

var durationType = reflect.TypeOf(config.Duration(0))

// schemaKeys lists every leaf key of config.Config by its toml tags. A
// struct, pointer to struct or slice of structs is a table; anything else
// (config.Duration included) is a key.
func schemaKeys() map[string]schemaKey {
	out := map[string]schemaKey{}
	var walk func(t reflect.Type, prefix string, path []string)
	walk = func(t reflect.Type, prefix string, path []string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			key := tag
			if prefix != "" {
				key = prefix + "." + tag
			}
			ft := f.Type
			inner := ft
			for inner.Kind() == reflect.Pointer || inner.Kind() == reflect.Slice {
				inner = inner.Elem()
			}
			p := append(slices.Clone(path), f.Name)
			if inner.Kind() == reflect.Struct && inner != durationType {
				walk(inner, key, p)
				continue
			}
			out[key] = schemaKey{path: p, typ: ft, table: prefix}
		}
	}
	walk(reflect.TypeOf(config.Config{}), "", nil)
	return out
}

// tomlType is how the README writes a Go field's TOML type.
func tomlType(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Pointer:
		return tomlType(t.Elem())
	case t.Kind() == reflect.Slice:
		return "array of " + tomlType(t.Elem()) + "s"
	case t.Kind() == reflect.Map:
		return "table of " + tomlType(t.Elem()) + "s"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Float64:
		return "float"
	}
	return t.String()
}

// docRow is one row of the reference.
type docRow struct {
	key, typ, def, example string
	line                   int
}

var tableName = regexp.MustCompile("`\\[{1,2}([a-z_.]+)\\]{1,2}`")

// readmeReference parses the "## Configuration reference" section:
// "### `[acme]`" headings (a heading may name several tables that share
// their keys) followed by tables whose rows are | `key` | type | default |
// example | meaning |.
func readmeReference(t *testing.T) map[string]docRow {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]docRow{}
	in := false
	var tables []string
	for n, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.HasPrefix(line, "## Configuration reference")
			tables = nil
			continue
		case !in:
			continue
		case strings.HasPrefix(line, "### "):
			tables = nil
			for _, m := range tableName.FindAllStringSubmatch(line, -1) {
				tables = append(tables, m[1])
			}
			if len(tables) == 0 {
				t.Errorf("README.md:%d: a reference heading names no `[table]`: %q", n+1, line)
			}
			continue
		case !strings.HasPrefix(line, "| `"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 5 {
			t.Errorf("README.md:%d: want 5 cells (key, type, default, example, meaning), got %d: %q", n+1, len(cells), line)
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
			if cells[i] == "" {
				t.Errorf("README.md:%d: empty cell %d", n+1, i+1)
			}
		}
		key := strings.Trim(cells[0], "`")
		if len(tables) == 0 {
			t.Errorf("README.md:%d: key %s before any `[table]` heading", n+1, key)
		}
		for _, tb := range tables {
			full := tb + "." + key
			if prev, dup := out[full]; dup {
				t.Errorf("README.md:%d: %s documented twice (first at line %d)", n+1, full, prev.line)
			}
			out[full] = docRow{key: key, typ: cells[1], def: cells[2], example: cells[3], line: n + 1}
		}
	}
	if len(out) == 0 {
		t.Fatal("README.md has no configuration reference")
	}
	return out
}

func TestREADMEReferenceMatchesSchema(t *testing.T) {
	schema := schemaKeys()
	doc := readmeReference(t)
	var missing []string
	for key, sk := range schema {
		row, ok := doc[key]
		if !ok {
			missing = append(missing, key)
			continue
		}
		if want := tomlType(sk.typ); row.typ != want {
			t.Errorf("README.md:%d: %s has type %q, the schema says %q", row.line, key, row.typ, want)
		}
		if !strings.Contains(row.example, "`") {
			t.Errorf("README.md:%d: %s: the example %q is not written as TOML in backquotes", row.line, key, row.example)
		}
	}
	slices.Sort(missing)
	for _, key := range missing {
		t.Errorf("README.md: the configuration reference does not document %s (%s)", key, tomlType(schema[key].typ))
	}
	for key, row := range doc {
		if _, ok := schema[key]; !ok {
			t.Errorf("README.md:%d: %s is documented but not in the schema (config.Config)", row.line, key)
		}
	}
}

// literalDefault matches a default cell that is exactly one TOML literal
// in backquotes; other cells ("—", prose) are not compared.
var literalDefault = regexp.MustCompile("^`([^`]+)`$")

// TestREADMEDefaults compares each documented literal default with what
// config.Load gives a config that does not set the key.
func TestREADMEDefaults(t *testing.T) {
	// A site covered by a certificate of its own needs no [acme], so every
	// key is left to its default.
	dir := t.TempDir()
	testkit.SelfSigned(t, "app.example.net").WritePEM(t, dir)
	path := writeFile(t, dir, "portico.toml", `[[site]]
hosts = ["app.example.net"]
respond = "ok"

[[certificate]]
cert = "cert.pem"
key = "key.pem"
`)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	schema := schemaKeys()
	compared := 0
	for key, row := range readmeReference(t) {
		sk, ok := schema[key]
		m := literalDefault.FindStringSubmatch(row.def)
		if !ok || m == nil {
			continue
		}
		got, ok := fieldValue(reflect.ValueOf(*cfg), sk.path)
		if !ok {
			continue // inside an absent table or an array of tables
		}
		// decode the documented literal into a value of the field's type
		holder := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: sk.typ, Tag: `toml:"v"`}}))
		if _, err := toml.Decode("v = "+m[1], holder.Interface()); err != nil {
			t.Errorf("README.md:%d: %s: default %s is not a TOML %s: %v", row.line, key, row.def, tomlType(sk.typ), err)
			continue
		}
		want := holder.Elem().Field(0).Interface()
		if !reflect.DeepEqual(got.Interface(), want) {
			t.Errorf("README.md:%d: %s: documented default %s, config.Load gives %v", row.line, key, row.def, fmtValue(got))
		}
		compared++
	}
	if compared < 15 {
		t.Errorf("only %d defaults compared: the reference should write defaults as TOML literals", compared)
	}
}

// fieldValue follows Go field names from v; false when the path goes
// through a nil pointer or a slice (an absent table, an array of tables).
func fieldValue(v reflect.Value, path []string) (reflect.Value, bool) {
	for _, name := range path {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return v, false
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return v, false
		}
		v = v.FieldByName(name)
	}
	return v, true
}

func fmtValue(v reflect.Value) string {
	if d, ok := v.Interface().(config.Duration); ok {
		return fmt.Sprintf("%q", d.Std().String())
	}
	return fmt.Sprintf("%#v", v.Interface())
}

// TestREADMEOpening: the README starts with the two commands, then the curl
// line, as the project's first page promises.
func TestREADMEOpening(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	run, test, curl := strings.Index(s, "make run "), strings.Index(s, "make test "), strings.Index(s, "curl --cacert examples/data/localca/root.crt https://localhost:8443/")
	if !strings.HasPrefix(s, "# Portico\n\n```sh\nmake run ") || run < 0 || test < run || curl < test || curl > 1200 {
		t.Errorf("README.md must open with `make run`, `make test`, then the curl line (at %d, %d, %d)", run, test, curl)
	}
}
