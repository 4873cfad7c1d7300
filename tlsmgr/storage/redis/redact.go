package redisstorage

import (
	"net/url"
	"strings"
)

// redactedPassword replaces passwords; it is what url.URL.Redacted uses.
const redactedPassword = "xxxxx"

// RedactURL returns rawURL with its password replaced by "xxxxx", for
// use in errors and logs. The user name, host, database and query are
// kept because they help diagnose connection problems and are not
// secret.
//
// A URL that does not parse cannot be split reliably into its parts, so
// everything between the scheme and the last '@' (which is where the
// userinfo ends in any URL that has one) is replaced instead. The same
// is done when a URL parses without userinfo yet contains an '@': a
// password with an unescaped '/', '?' or '#' ends the authority early,
// e.g. "redis://u:123/4@host" parses as host "u", port "123".
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err == nil && (u.User != nil || !strings.Contains(rawURL, "@")) {
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), redactedPassword)
			}
		}
		return u.String()
	}

	at := strings.LastIndex(rawURL, "@")
	if at < 0 {
		return rawURL
	}
	start := 0
	if i := strings.Index(rawURL, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	return rawURL[:start] + redactedPassword + rawURL[at:]
}
