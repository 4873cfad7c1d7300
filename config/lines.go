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
}

func indexLines(text string) lineIndex {
	idx := lineIndex{exact: map[string]int{}, loose: map[string]int{}}
	counts := map[string]int{}
	cur, curLoose := "", ""
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		n := i + 1
		switch {
		case line == "" || line[0] == '#':
			continue
		case strings.HasPrefix(line, "[["):
			name := strings.TrimSpace(strings.Trim(strings.SplitN(line, "]]", 2)[0], "[ "))
			k := counts[name]
			counts[name] = k + 1
			cur, curLoose = name+"."+strconv.Itoa(k), name
			idx.set(cur, curLoose, n)
		case line[0] == '[':
			name := strings.TrimSpace(strings.Trim(strings.SplitN(line, "]", 2)[0], "[ "))
			cur, curLoose = name, name
			// a [a.b] under the last [[a]] belongs to that element
			if dot := strings.IndexByte(name, '.'); dot > 0 {
				if k, ok := counts[name[:dot]]; ok {
					cur = name[:dot] + "." + strconv.Itoa(k-1) + name[dot:]
				}
			}
			idx.set(cur, curLoose, n)
		default:
			eq := strings.IndexByte(line, '=')
			if eq <= 0 {
				continue
			}
			key := strings.Trim(strings.TrimSpace(line[:eq]), `"'`)
			idx.set(join(cur, key), join(curLoose, key), n)
		}
	}
	return idx
}

func (idx lineIndex) set(exact, loose string, n int) {
	if _, ok := idx.exact[exact]; !ok {
		idx.exact[exact] = n
	}
	if _, ok := idx.loose[loose]; !ok {
		idx.loose[loose] = n
	}
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
