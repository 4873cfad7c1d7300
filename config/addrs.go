package config

import (
	"fmt"
	"net"
	"strings"
)

// sharedAddresses refuses two listeners ([listen] http, https and admin) on
// one TCP address, which would pass the check and then fail at start with
// "bind: address already in use", as if another process held the port. A
// listener on every interface (":443", "0.0.0.0:443", "[::]:443") takes
// the port on each address too.
func (v *validator) sharedAddresses(l *Listen) {
	type listener struct{ name, addr, host, port string }
	var seen []listener
	for _, c := range []struct{ name, addr string }{{"http", l.HTTP}, {"https", l.HTTPS}, {"admin", l.Admin}} {
		if c.addr == "" || strings.Contains(c.addr, "/") {
			continue // off, or a unix socket
		}
		host, port, err := net.SplitHostPort(c.addr)
		if err != nil || port == "0" {
			continue // reported as not an address; port 0 is a free port each time
		}
		cur := listener{c.name, c.addr, canonicalHost(host), port}
		for _, o := range seen {
			if o.port != cur.port || (o.host != cur.host && o.host != "" && cur.host != "") {
				continue
			}
			at, other := cur, o
			if v.lines.exact["listen."+cur.name] == 0 {
				at, other = o, cur // point at the key written in the file
			}
			otherAddr := fmt.Sprintf("%q", other.addr)
			if v.lines.exact["listen."+other.name] == 0 {
				otherAddr += ", the default"
			}
			v.bad("listen."+at.name, `give each of http, https and admin its own port, e.g. admin = "127.0.0.1:2019"`,
				"%q is also the %s address (%s): two listeners cannot share an address", at.addr, other.name, otherAddr)
			break
		}
		seen = append(seen, cur)
	}
}

// canonicalHost writes a listen host so that two ways to write the same
// address compare equal; "" means every interface.
func canonicalHost(host string) string {
	switch h := strings.ToLower(host); h {
	case "", "0.0.0.0", "::":
		return ""
	case "localhost":
		return "127.0.0.1"
	default:
		if ip := net.ParseIP(h); ip != nil {
			return ip.String()
		}
		return h
	}
}
