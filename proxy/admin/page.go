package admin

import (
	"bytes"
	"cmp"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/proxy"
	"github.com/portico-proxy/portico/tlsmgr"
)

//go:embed page.html
var pageHTML string

// pageTmpl is the status page. html/template escapes every value taken from
// the certificates (names, issuers, errors) for the context it lands in.
var pageTmpl = template.Must(template.New("page").Parse(pageHTML))

// Geometry of the validity bars, in CSS pixels: every row's bar and the
// axis above them share one scale.
const (
	barWidth  = 320.0
	barHeight = 22.0
	axisPad   = 6.0 // room for the first and last marks
)

// isPage reports whether r asks for the status page.
func isPage(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.URL.Path == "/"
}

// page serves the status page to an authorized request.
func (a *api) page(w http.ResponseWriter, r *http.Request) {
	a.servePage(w, r, http.StatusOK, true)
}

// servePage renders the page: with authorized false, only the frame and the
// token form (no certificate data), for a browser that has not sent the
// token yet.
func (a *api) servePage(w http.ResponseWriter, r *http.Request, code int, authorized bool) {
	nonce, err := newNonce()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot render the page: "+err.Error())
		return
	}
	d := pageData{Nonce: nonce, Authorized: authorized, TokenMode: a.tokenSum != nil}
	if authorized {
		now := a.now()
		d.fill(a.Certs.Status(r.Context()), now)
		d.Pools = a.poolStatus()
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, d); err != nil {
		a.Logger.Error("admin API: status page", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "cannot render the page")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+"'; "+
		"connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
	if !authorized {
		h.Set("WWW-Authenticate", `Bearer realm="portico admin"`)
	}
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func newNonce() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// pageData is what the template shows.
type pageData struct {
	Nonce      string
	Authorized bool // false: the token form only
	TokenMode  bool // a token is configured: offer to forget it

	Generated string
	Count     int
	Names     int
	Failing   int
	Due       int
	Expired   int
	Pending   int

	Axis   axis
	Groups []certGroup
	Pools  []proxy.PoolStatus
}

// axis is the time scale shared by every bar.
type axis struct {
	Width, Height float64
	NowX          float64
	NowLabel      string
	Ticks         []tick
}

type tick struct {
	X     float64
	Label string
}

// certGroup is one name with a row per key type; its Retry button retries
// every key type.
type certGroup struct {
	Name    string
	SANs    []string // every name of a shared (SAN) certificate
	Rows    []certRow
	Failing bool
}

type certRow struct {
	KeyType    string
	Issuer     string
	OCSP       string
	State      string // ok, due, expired, pending: a CSS class
	StateLabel string
	Failing    bool

	Bar         bool // there is a certificate: a bar from not before to not after
	BarX, BarW  float64
	Window      bool // the renewal window, renew at → not after, is on the axis
	WinX, WinW  float64
	Renew       bool
	RenewX      float64
	Retry       bool // a next retry is scheduled
	RetryX      float64
	NowX        float64
	Width       float64
	Height      float64
	BarTitle    string
	Expires     string
	ExpiresRel  string
	Renews      string
	RenewsRel   string
	Failures    int
	LastError   string
	NextRetry   string
	NextRetryAt string
}

const dateLayout = "2006-01-02 15:04 MST"

func (d *pageData) fill(certs []tlsmgr.CertStatus, now time.Time) {
	now = now.UTC()
	certs = slices.Clone(certs)
	slices.SortStableFunc(certs, func(x, y tlsmgr.CertStatus) int {
		return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.KeyType, y.KeyType))
	})
	d.Generated = now.Format(dateLayout)
	d.Count = len(certs)
	lo, hi := timeRange(certs, now)
	scale := func(t time.Time) float64 {
		f := float64(t.Sub(lo)) / float64(hi.Sub(lo))
		return axisPad + min(max(f, 0), 1)*(barWidth-2*axisPad)
	}
	d.Axis = axis{Width: barWidth, Height: 30, NowX: scale(now), NowLabel: "now", Ticks: ticks(lo, hi, scale)}
	failingNames := map[string]bool{}
	for _, st := range certs {
		row := certRow{KeyType: st.KeyType, Issuer: st.Issuer, OCSP: st.OCSP, Failures: st.Failures,
			LastError: st.LastError, NowX: scale(now), Width: barWidth, Height: barHeight, Failing: st.Failures > 0}
		switch {
		case st.NotAfter == nil:
			row.State, row.StateLabel = "pending", "no certificate yet"
			d.Pending++
		case !now.Before(*st.NotAfter):
			row.State, row.StateLabel = "expired", "expired"
			d.Expired++
		case st.RenewAt != nil && !now.Before(*st.RenewAt):
			row.State, row.StateLabel = "due", "due for renewal"
			d.Due++
		default:
			row.State, row.StateLabel = "ok", "valid"
		}
		if st.NotAfter != nil {
			nb := *st.NotAfter
			if st.NotBefore != nil {
				nb = *st.NotBefore
			}
			row.Bar = true
			row.BarX = scale(nb)
			row.BarW = max(scale(*st.NotAfter)-row.BarX, 1)
			row.Expires = st.NotAfter.UTC().Format(dateLayout)
			row.ExpiresRel = relative(*st.NotAfter, now)
			row.BarTitle = fmt.Sprintf("%s %s: valid %s → %s", st.Name, st.KeyType, nb.UTC().Format(dateLayout), row.Expires)
			if st.RenewAt != nil && st.RenewAt.Before(*st.NotAfter) {
				row.Window = true
				row.WinX = scale(*st.RenewAt)
				row.WinW = max(scale(*st.NotAfter)-row.WinX, 1)
				row.BarTitle += ", renewal window from " + st.RenewAt.UTC().Format(dateLayout)
			}
		}
		if st.RenewAt != nil {
			row.Renew = true
			row.RenewX = scale(*st.RenewAt)
			row.Renews = st.RenewAt.UTC().Format(dateLayout)
			row.RenewsRel = relative(*st.RenewAt, now)
		}
		if st.Failures > 0 && st.NextRetry != nil {
			row.Retry = true
			row.RetryX = scale(*st.NextRetry)
			row.NextRetryAt = st.NextRetry.UTC().Format(dateLayout)
			row.NextRetry = "next retry " + relative(*st.NextRetry, now)
			if !st.NextRetry.After(now) {
				row.NextRetry = "retry due now"
			}
		}
		if st.Failures > 0 {
			d.Failing++
			failingNames[st.Name] = true
		}
		if n := len(d.Groups); n == 0 || d.Groups[n-1].Name != st.Name {
			d.Groups = append(d.Groups, certGroup{Name: st.Name})
		}
		if len(st.Names) > 1 && d.Groups[len(d.Groups)-1].SANs == nil {
			d.Groups[len(d.Groups)-1].SANs = st.Names
		}
		g := &d.Groups[len(d.Groups)-1]
		g.Rows = append(g.Rows, row)
		g.Failing = g.Failing || row.Failing
	}
	d.Names = len(d.Groups)
}

// timeRange is the span the axis shows: every certificate's validity, now
// and every scheduled retry, with a little room on both sides.
func timeRange(certs []tlsmgr.CertStatus, now time.Time) (lo, hi time.Time) {
	lo, hi = now, now
	widen := func(t *time.Time) {
		if t == nil {
			return
		}
		if t.Before(lo) {
			lo = *t
		}
		if t.After(hi) {
			hi = *t
		}
	}
	for _, st := range certs {
		widen(st.NotBefore)
		widen(st.NotAfter)
		widen(st.RenewAt)
		if st.Failures > 0 {
			widen(st.NextRetry)
		}
	}
	if hi.Sub(lo) < 48*time.Hour {
		lo, hi = lo.Add(-24*time.Hour), hi.Add(24*time.Hour)
	}
	pad := hi.Sub(lo) / 40
	return lo.Add(-pad), hi.Add(pad)
}

// ticks marks the axis at round dates: at most about six marks.
func ticks(lo, hi time.Time, scale func(time.Time) float64) []tick {
	span := hi.Sub(lo)
	const day = 24 * time.Hour
	type step struct {
		d      time.Duration
		months int
		layout string
	}
	steps := []step{
		{6 * time.Hour, 0, "Jan 2 15h"}, {12 * time.Hour, 0, "Jan 2 15h"}, {day, 0, "Jan 2"}, {2 * day, 0, "Jan 2"},
		{7 * day, 0, "Jan 2"}, {14 * day, 0, "Jan 2"}, {0, 1, "Jan 2"}, {0, 2, "Jan 2"}, {0, 3, "Jan 2006"},
		{0, 6, "Jan 2006"}, {0, 12, "2006"},
	}
	s := steps[len(steps)-1]
	for _, c := range steps {
		approx := c.d
		if c.months > 0 {
			approx = time.Duration(c.months) * 30 * day
		}
		if span/approx <= 5 {
			s = c
			break
		}
	}
	var t time.Time
	lo = lo.UTC()
	if s.months > 0 {
		t = time.Date(lo.Year(), lo.Month(), 1, 0, 0, 0, 0, time.UTC)
	} else {
		t = lo.Truncate(s.d)
		if s.d >= 7*day { // weeks start on Mondays
			t = time.Date(lo.Year(), lo.Month(), lo.Day(), 0, 0, 0, 0, time.UTC)
			for t.Weekday() != time.Monday {
				t = t.AddDate(0, 0, -1)
			}
		}
	}
	var out []tick
	for ; !t.After(hi); t = next(t, s.d, s.months) {
		if t.Before(lo) {
			continue
		}
		out = append(out, tick{X: scale(t), Label: t.Format(s.layout)})
	}
	return out
}

func next(t time.Time, d time.Duration, months int) time.Time {
	if months > 0 {
		return t.AddDate(0, months, 0)
	}
	return t.Add(d)
}

// relative says when t is from now in one unit, rounded down: "in 41d",
// "2h ago".
func relative(t, now time.Time) string {
	if t.After(now) {
		return "in " + tlsmgr.ShortDuration(t.Sub(now))
	}
	return tlsmgr.ShortDuration(now.Sub(t)) + " ago"
}
