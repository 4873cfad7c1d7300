package admin

// The status page in a real browser: headless Chromium (Debian's chromium
// package; .ci/run installs it) takes a screenshot of the page, and is then
// driven over the Chrome DevTools Protocol to click Retry buttons, with and
// without an admin token.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// chromiumPath finds Chromium; a test that needs it is skipped without it,
// except in CI, where .ci/run installs it and its absence is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed: .ci/run installs Debian's chromium package")
	}
	t.Skip("outside CI without chromium (apt-get install chromium); CI fails instead")
	return ""
}

// testOut is where the screenshots go: $PORTICO_TEST_OUT when set (kept),
// else a temporary directory.
func testOut(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("PORTICO_TEST_OUT"); dir != "" {
		dir, err := filepath.Abs(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

// chromiumFlags are the flags of every Chromium this file starts: headless,
// nothing fetched from the network on its own, a profile of its own.
func chromiumFlags(profile string) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + profile, "--window-size=1280,800"}
}

// profileDir is a Chromium profile directory, removed once the browser is
// gone (the browser may still be writing to it while t.TempDir's own
// cleanup would run).
func profileDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "portico-chromium")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startChromium starts Chromium in its own process group, so that the
// group (the browser and its renderers) is ended with it.
func startChromium(t *testing.T, ctx context.Context, args ...string) (*exec.Cmd, io.ReadCloser) {
	t.Helper()
	cmd := exec.CommandContext(ctx, chromiumPath(t), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stderr
}

// servePage serves h on a loopback TCP port, as the admin API is served
// by default, and returns its URL.
func servePage(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln, h)
	return "http://" + ln.Addr().String() + "/"
}

// TestStatusPageScreenshot is the page as `chromium --screenshot` sees it.
func TestStatusPageScreenshot(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: starts a browser")
	}
	chromiumPath(t)
	url := servePage(t, pageHandler(Options{Certs: pageFake()}))
	out := filepath.Join(testOut(t), "status.png")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd, stderr := startChromium(t, ctx, append(chromiumFlags(profileDir(t)), "--screenshot="+out, url)...)
	log, _ := io.ReadAll(stderr)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, log)
	}
	t.Logf("screenshot of the status page: %s", out)
	img := readPNG(t, out)
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 800 {
		t.Errorf("screenshot is %v, want 1280x800", b.Size())
	}
	checkRendered(t, img)
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() < 10<<10 {
		t.Errorf("%s is only %d bytes", path, fi.Size())
	}
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

// checkRendered asserts the screenshot shows a page with text and the
// bars: many colours, and the exact fills of a valid bar, a renewal window
// and an expired bar.
func checkRendered(t *testing.T, img image.Image) {
	t.Helper()
	colours := map[color.RGBA]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), 255}]++
		}
	}
	if len(colours) < 50 {
		t.Errorf("the screenshot has %d colours: a blank or broken page?", len(colours))
	}
	for name, c := range map[string]color.RGBA{
		"valid bar (#2e8540)":   {0x2e, 0x85, 0x40, 255},
		"expired bar (#c62828)": {0xc6, 0x28, 0x28, 255},
	} {
		if colours[c] < 100 {
			t.Errorf("the screenshot has %d pixels of the %s", colours[c], name)
		}
	}
	// the renewal window is drawn at 85% opacity over the bar
	window := 0
	for c, n := range colours {
		if c.R > 0xc0 && c.G > 0x7c && c.G < 0x95 && c.B < 0x20 {
			window += n
		}
	}
	if window < 100 {
		t.Errorf("the screenshot has %d pixels of the renewal window (amber)", window)
	}
}

// cdp is a minimal Chrome DevTools Protocol client on one page target.
type cdp struct {
	t    *testing.T
	ws   *websocket.Conn
	next int
}

// dialPage starts Chromium with remote debugging and connects to its page.
func dialPage(t *testing.T) *cdp {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd, stderr := startChromium(t, ctx, append(chromiumFlags(profileDir(t)),
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--remote-allow-origins=http://127.0.0.1", "about:blank")...)
	t.Cleanup(func() { cancel(); cmd.Wait() })

	// Chromium says where it listens on stderr: "DevTools listening on ws://...".
	found := make(chan string, 1)
	var logTail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if logTail.Len() < 8<<10 {
				logTail.WriteString(line + "\n")
			}
			if _, ws, ok := strings.Cut(line, "DevTools listening on "); ok {
				found <- ws
			}
		}
	}()
	var browserWS string
	select {
	case browserWS = <-found:
	case <-time.After(60 * time.Second):
		t.Fatalf("chromium did not start its DevTools server")
	}
	m := regexp.MustCompile(`^ws://([^/]+)/`).FindStringSubmatch(browserWS)
	if m == nil {
		t.Fatalf("DevTools address %q", browserWS)
	}
	var targets []struct {
		Type                 string `json:"type"`
		WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
	}
	deadline := time.Now().Add(30 * time.Second)
	var pageWS string
	for pageWS == "" {
		resp, err := http.Get("http://" + m[1] + "/json/list")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
		}
		for _, tg := range targets {
			if tg.Type == "page" && err == nil {
				pageWS = tg.WebSocketDebuggerURL
			}
		}
		if pageWS == "" {
			if time.Now().After(deadline) {
				t.Fatalf("no page target: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	ws, err := websocket.Dial(pageWS, "", "http://127.0.0.1")
	if err != nil {
		t.Fatalf("DevTools websocket: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return &cdp{t: t, ws: ws}
}

// call sends one command and returns its result, skipping events.
func (c *cdp) call(method string, params any) (json.RawMessage, error) {
	c.next++
	id := c.next
	c.ws.SetDeadline(time.Now().Add(30 * time.Second))
	if err := websocket.JSON.Send(c.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return nil, err
	}
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := websocket.JSON.Receive(c.ws, &msg); err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		if msg.ID != id {
			continue // an event
		}
		if msg.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, msg.Error.Message)
		}
		return msg.Result, nil
	}
}

// eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value into out (unless nil).
func (c *cdp) eval(expr string, out any) error {
	res, err := c.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if e := r.ExceptionDetails; e != nil {
		return fmt.Errorf("%s: %s %s", expr, e.Text, e.Exception.Description)
	}
	if out != nil && r.Result.Value != nil {
		return json.Unmarshal(r.Result.Value, out)
	}
	return nil
}

// must is eval that fails the test on an error.
func (c *cdp) must(expr string, out any) {
	c.t.Helper()
	if err := c.eval(expr, out); err != nil {
		c.t.Fatal(err)
	}
}

// waitFor evaluates expr until it gives a non-empty string, and returns it.
func (c *cdp) waitFor(what, expr string) string {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var s string
		err := c.eval(expr, &s)
		if err == nil && s != "" {
			return s
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting for %s: %q %v", what, s, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cdp) navigate(url string) {
	c.t.Helper()
	if _, err := c.call("Page.navigate", map[string]any{"url": url}); err != nil {
		c.t.Fatal(err)
	}
	c.waitFor("the page to load", `document.readyState === "complete" && location.href === `+jsString(url)+` ? "yes" : ""`)
}

func (c *cdp) screenshot(path string) {
	c.t.Helper()
	res, err := c.call("Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		c.t.Fatal(err)
	}
	var r struct {
		Data string `json:"data"`
	}
	json.Unmarshal(res, &r)
	b, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("screenshot: %s", path)
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// clickRetry clicks the Retry button of name and returns what the page
// then shows next to it.
func (c *cdp) clickRetry(name string) string {
	c.t.Helper()
	sel := jsString(`button.retry[data-name=` + jsString(name) + `]`)
	c.must(`document.querySelector(`+sel+`).click()`, nil)
	return c.waitFor("the answer to Retry "+name, `(function () {
		var b = document.querySelector(`+sel+`);
		var o = b.parentNode.querySelector("output");
		return b.disabled ? "" : o.textContent;
	})()`)
}

// TestStatusPageRetryInBrowser: the Retry buttons of the page, clicked in
// Chromium without a token: the page's POSTs carry its own Origin, which
// the browser guard lets through on loopback.
func TestStatusPageRetryInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: starts a browser")
	}
	chromiumPath(t)
	f := pageFake()
	url := servePage(t, pageHandler(Options{Certs: f}))
	c := dialPage(t)
	c.navigate(url)

	var rows int
	c.must(`document.querySelectorAll("tr.cert").length`, &rows)
	if rows != len(f.status) {
		t.Errorf("%d certificate rows in the page, want %d", rows, len(f.status))
	}
	var scripts int
	c.must(`document.scripts.length`, &scripts)
	if scripts != 1 {
		t.Errorf("%d scripts in the page", scripts)
	}

	if got := c.clickRetry("new.example.net"); got != "✓ retrying now" {
		t.Errorf("Retry new.example.net shows %q", got)
	}
	if got := c.clickRetry("*.example.org"); got != "✓ retrying now" {
		t.Errorf("Retry *.example.org shows %q", got)
	}
	if got := c.clickRetry("shop.example.net (+2 SAN)"); got != "✓ retrying now" {
		t.Errorf("Retry of a shared certificate shows %q", got)
	}
	// a name removed from the config since the page was rendered
	if got := c.clickRetry("gone.example.net"); got != `✗ "gone.example.net" is not a name Portico manages: see GET /certificates` {
		t.Errorf("Retry gone.example.net shows %q", got)
	}
	if got := f.retriedNames(); !slices.Equal(got, []string{"new.example.net", "*.example.org", "shop.example.net (+2 SAN)"}) {
		t.Errorf("Certs.Retry got %v, want [new.example.net *.example.org shop.example.net (+2 SAN)]", got)
	}
	c.screenshot(filepath.Join(testOut(t), "status-after-retry.png"))

	// Refresh re-renders in place and keeps working
	c.must(`document.getElementById("refresh").click()`, nil)
	c.waitFor("the refreshed page", `document.querySelector("output.result.ok") === null && document.querySelectorAll("tr.cert").length === `+fmt.Sprint(len(f.status))+` ? "yes" : ""`)
	if got := c.clickRetry("app.example.net"); got != "✓ retrying now" {
		t.Errorf("Retry after Refresh shows %q", got)
	}
}

// TestStatusPageTokenInBrowser: with an admin token, the page asks for it,
// keeps it in sessionStorage and sends it as a bearer token.
func TestStatusPageTokenInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: starts a browser")
	}
	chromiumPath(t)
	const token = "0123456789abcdef-s3cret"
	f := pageFake()
	url := servePage(t, pageHandler(Options{Certs: f, Token: token}))
	c := dialPage(t)
	c.navigate(url)

	var shell struct {
		Form bool `json:"form"`
		Rows int  `json:"rows"`
	}
	c.must(`({form: document.getElementById("login") !== null, rows: document.querySelectorAll("tr.cert").length})`, &shell)
	if !shell.Form || shell.Rows != 0 {
		t.Fatalf("without the token: %+v, want the form and no rows", shell)
	}

	submit := func(tok string) {
		c.must(`document.getElementById("token").value = `+jsString(tok)+`; document.getElementById("login").requestSubmit()`, nil)
	}
	submit("not-the-token-0123")
	if got := c.waitFor("the refusal", `(document.getElementById("login-result") || {}).textContent || ""`); got != "wrong token" {
		t.Errorf("wrong token shows %q", got)
	}
	var stored string
	c.must(`sessionStorage.getItem("portico-admin-token") || ""`, &stored)
	if stored != "" {
		t.Errorf("a refused token stays stored: %q", stored)
	}

	submit(token)
	all := `document.querySelectorAll("tr.cert").length === ` + fmt.Sprint(len(f.status)) + ` ? "yes" : ""`
	c.waitFor("the certificates", all)
	if got := c.clickRetry("old.example.net"); got != "✓ retrying now" {
		t.Errorf("Retry with the token shows %q", got)
	}
	if got := f.retriedNames(); !slices.Equal(got, []string{"old.example.net"}) {
		t.Errorf("Certs.Retry got %v", got)
	}

	// a reload of the tab keeps the token (sessionStorage) and shows the data
	c.navigate(url)
	c.waitFor("the certificates after a reload", all)
	// forgetting it brings the form back
	c.must(`document.getElementById("forget").click()`, nil)
	c.waitFor("the form", `document.readyState === "complete" && document.getElementById("login") !== null ? "yes" : ""`)
	c.screenshot(filepath.Join(testOut(t), "status-token-form.png"))
}
