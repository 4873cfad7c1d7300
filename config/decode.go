package config

import (
	"cmp"
	"encoding"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// The TOML decoder stops at the first value of the wrong type, and which one
// it meets first changes from run to run (it walks Go maps). Portico decodes
// key by key instead: every table is read as raw values (toml.Primitive),
// then each value is decoded into its field on its own, so one wrong value
// is one problem and the rest of the file is still decoded and validated.

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// decoder decodes a parsed file into a Config, key by key.
type decoder struct {
	md   *toml.MetaData
	data []byte
	v    *validator
}

// decodeTable decodes the keys of a table into the struct rv; path is the
// table's key path ("" for the top level, "site.1" for the second site).
func (d *decoder) decodeTable(keys map[string]toml.Primitive, rv reflect.Value, path string) {
	for key, prim := range keys {
		f, ok := fieldFor(rv.Type(), key)
		if !ok {
			continue // unknown: reported from the file's key list
		}
		d.decodeValue(prim, rv.FieldByIndex(f.Index), join(path, key))
	}
}

// decodeValue decodes one value into rv, recursing into tables and arrays
// of tables. A value that does not decode leaves rv at its zero value and
// is recorded as a problem.
func (d *decoder) decodeValue(prim toml.Primitive, rv reflect.Value, path string) {
	t := rv.Type()
	switch {
	case reflect.PointerTo(t).Implements(textUnmarshaler):
	case t.Kind() == reflect.Struct:
		var keys map[string]toml.Primitive
		if d.decode(prim, &keys, path) {
			d.decodeTable(keys, rv, path)
		}
		return
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		var keys map[string]toml.Primitive
		if d.decode(prim, &keys, path) {
			nv := reflect.New(t.Elem())
			d.decodeTable(keys, nv.Elem(), path)
			rv.Set(nv)
		}
		return
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		var elems []map[string]toml.Primitive
		if d.decode(prim, &elems, path) {
			rv.Set(reflect.MakeSlice(t, len(elems), len(elems)))
			for i, keys := range elems {
				d.decodeTable(keys, rv.Index(i), path+"."+strconv.Itoa(i))
			}
		}
		return
	}
	if !d.decode(prim, rv.Addr().Interface(), path) {
		rv.SetZero()
	}
}

// decode decodes prim into out and reports whether it could; when not, the
// problem is recorded at path.
func (d *decoder) decode(prim toml.Primitive, out any, path string) bool {
	err := d.md.PrimitiveDecode(prim, out)
	if err == nil {
		return true
	}
	p := d.v.decodeProblem(d.data, err, "see the configuration reference in README.md for the key's type and format")
	p.Key, p.Line = display(path), d.v.lines.line(path)
	d.v.problems = append(d.v.problems, p)
	return false
}

// fieldFor finds the field of struct type t that a TOML key sets: the one
// with that toml tag or, as the TOML decoder does, a case-insensitive match.
func fieldFor(t reflect.Type, key string) (reflect.StructField, bool) {
	var fold reflect.StructField
	found := false
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := tagName(f)
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f, true
		}
		if !found && strings.EqualFold(name, key) {
			fold, found = f, true
		}
	}
	return fold, found
}

// inSchema reports whether the schema has a place for key: every part
// names a field, or the key lies under a value that is not a table (whose
// wrong type is reported as such).
func inSchema(key toml.Key) bool {
	t := reflect.TypeFor[Config]()
	for _, part := range key {
		for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(textUnmarshaler) {
			return true
		}
		f, ok := fieldFor(t, part)
		if !ok {
			return false
		}
		t = f.Type
	}
	return true
}

// report returns the problems found, in file order (problems that point at
// no line last). The first unread problems are about values that could not
// be read (wrong type, unknown key, unset placeholder); what validation then
// says of the zero value left in their place ("missing", "must be true", or
// of a whole [[site]]: "needs upstreams or respond") is not reported again.
func (v *validator) report(unread int) Errors {
	under := func(key string) bool {
		for _, p := range v.problems[:unread] {
			if key == p.Key || strings.HasPrefix(key, p.Key+".") || strings.HasPrefix(key, p.Key+"[") ||
				strings.HasSuffix(key, "]") && strings.HasPrefix(p.Key, key+".") {
				return true
			}
		}
		return false
	}
	out := slices.Clone(v.problems[:unread])
	for _, p := range v.problems[unread:] {
		if !under(p.Key) {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b Problem) int {
		if a.Line == 0 || b.Line == 0 {
			return cmp.Compare(b.Line, a.Line) // 0 after every line
		}
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Key, b.Key))
	})
	return Errors(out)
}
