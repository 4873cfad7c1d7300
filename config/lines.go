package config

import (
	"strconv"
	"strings"
)

// lineIndex maps key paths to the line that sets them. The TOML decoder keeps
// positions private, so Portico reads them off the text: table headers and
// `key =` lines are enough for error messages, which only need to point the
// operator at the right place.
type lineIndex struct {
	exact map[string]int // "site.1.hosts" (0-based table index) -> line
	loose map[string]int // "site.hosts" -> first line, for keys the decoder names without index
	// occurrences lists, for each loose path, the exact path of every place
	// that sets it, in file order: the decoder names a key of the second
	// [[site]] "site.hosts", and this tells which site the n-th one is in.
	occurrences map[string][]string
}

func indexLines(text string) lineIndex {
	idx := lineIndex{exact: map[string]int{}, loose: map[string]int{}, occurrences: map[string][]string{}}
	counts := map[string]int{} // exact path of an array of tables -> its elements so far
	// resolve turns a table header's name into its exact path: the
	// elements of arrays of tables it lies in get their indexes, so that
	// [[site.route]] under the 2nd [[site]] is "site.1.route.N", N
	// counting that site's routes.
	resolve := func(name string, array bool) string {
		parts := strings.Split(name, ".")
		exact := ""
		for i, p := range parts {
			exact = join(exact, p)
			if i == len(parts)-1 && array {
				k := counts[exact]
				counts[exact] = k + 1
				return exact + "." + strconv.Itoa(k)
			}
			if k, ok := counts[exact]; ok {
				exact += "." + strconv.Itoa(k-1)
			}
		}
		return exact
	}
	cur, curLoose := "", ""
	var skip func(string) bool // non-nil while inside a multi-line value
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		n := i + 1
		if skip != nil {
			if !skip(line) {
				skip = nil
			}
			continue
		}
		switch {
		case line == "" || line[0] == '#':
			continue
		case strings.HasPrefix(line, "[["):
			name := tableName(strings.SplitN(line, "]]", 2)[0])
			cur, curLoose = resolve(name, true), name
			idx.set(cur, curLoose, n)
		case line[0] == '[':
			// a [a.b] under the last [[a]] belongs to that element
			name := tableName(strings.SplitN(line, "]", 2)[0])
			cur, curLoose = resolve(name, false), name
			idx.set(cur, curLoose, n)
		default:
			eq := strings.IndexByte(line, '=')
			if eq <= 0 {
				continue
			}
			key := strings.Trim(strings.TrimSpace(line[:eq]), `"'`)
			idx.set(join(cur, key), join(curLoose, key), n)
			skip = continuation(line[eq+1:])
		}
	}
	return idx
}

func tableName(header string) string {
	return strings.TrimSpace(strings.Trim(header, "[ \t"))
}

// continuation looks at the value part of a `key = value` line and, when the
// value goes on over the next lines (a multi-line string or array), returns a
// function that, given each following line, reports whether the value still
// goes on after it. Lines inside such a value are not keys or headers, even
// when they hold "=" or start with "[".
func continuation(value string) func(string) bool {
	value = strings.TrimSpace(value)
	for _, q := range []string{`"""`, `'''`} {
		if strings.HasPrefix(value, q) {
			if strings.Count(value, q)%2 == 1 {
				return func(line string) bool { return strings.Count(line, q)%2 == 0 }
			}
			return nil
		}
	}
	if strings.HasPrefix(value, "[") || strings.HasPrefix(value, "{") {
		depth := bracketDepth(value, 0)
		if depth <= 0 {
			return nil
		}
		return func(line string) bool {
			depth = bracketDepth(line, depth)
			return depth > 0
		}
	}
	return nil
}

// bracketDepth adds the brackets opened and closed on one line to depth,
// ignoring brackets inside strings and comments.
func bracketDepth(line string, depth int) int {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#':
			return depth
		case c == '[' || c == '{':
			depth++
		case c == ']' || c == '}':
			depth--
		}
	}
	return depth
}

func (idx lineIndex) set(exact, loose string, n int) {
	if _, ok := idx.exact[exact]; !ok {
		idx.exact[exact] = n
		idx.occurrences[loose] = append(idx.occurrences[loose], exact)
	}
	if _, ok := idx.loose[loose]; !ok {
		idx.loose[loose] = n
	}
}

// occurrence returns the exact path of the n-th (0-based) place in the file
// that sets the loose path, or the loose path itself when there is none.
func (idx lineIndex) occurrence(loose string, n int) string {
	if o := idx.occurrences[loose]; n < len(o) {
		return o[n]
	}
	return loose
}

// line returns the line of a key path such as "site.1.hosts", falling back to
// its table, then to the loose form.
func (idx lineIndex) line(path string) int {
	for p := path; p != ""; {
		if n, ok := idx.exact[p]; ok {
			return n
		}
		dot := strings.LastIndexByte(p, '.')
		if dot < 0 {
			break
		}
		p = p[:dot]
	}
	return idx.loose[path]
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}
