package accesslog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portico-proxy/portico/integration/testkit"
)

// lineRecord is a record whose request_id tells lines apart.
func lineRecord(id string) *Record {
	r := fullRecord()
	r.RequestID = []byte(id)
	return r
}

// lockedBuffer is a writer tests can read while the log writes to it.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func requestIDs(t *testing.T, data string) []string {
	t.Helper()
	var ids []string
	for line := range strings.Lines(data) {
		var r struct {
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		ids = append(ids, r.RequestID)
	}
	return ids
}

func TestOpen(t *testing.T) {
	l, err := Open("", "json", nil)
	if l != nil || err != nil {
		t.Errorf(`Open("") = %v, %v; want nil, nil (the log is off)`, l, err)
	}
	// A nil log does nothing.
	l.Write(fullRecord())
	if err := l.Reopen(); err != nil {
		t.Error(err)
	}
	if err := l.Close(); err != nil {
		t.Error(err)
	}

	missing := filepath.Join(t.TempDir(), "nodir", "access.log")
	if _, err := Open(missing, "json", nil); err == nil || !strings.Contains(err.Error(), missing) ||
		!strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open in a missing directory: %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "a.log"), "xml", nil); err == nil ||
		!strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("Open with format xml: %v", err)
	}
	for _, std := range []string{"stdout", "stderr"} {
		l, err := Open(std, "combined", nil)
		if err != nil {
			t.Fatal(err)
		}
		if l.file != nil || l.format != Combined {
			t.Errorf("Open(%q): file %v, format %v", std, l.file, l.format)
		}
		if err := l.Reopen(); err != nil {
			t.Errorf("Reopen of %s: %v", std, err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close of %s: %v", std, err)
		}
	}
	if _, err := os.Stdout.Stat(); err != nil {
		t.Errorf("Close closed stdout: %v", err)
	}
}

func TestFileAppendsWithMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	if err := os.WriteFile(path, []byte("earlier\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(lineRecord("one"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "earlier\n{") || strings.Count(string(data), "\n") != 2 {
		t.Errorf("the file holds %q, want the earlier line and one more", data)
	}

	fresh := filepath.Join(t.TempDir(), "new.log")
	l, err = Open(fresh, "combined", nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o644&^umask(t) {
		t.Errorf("a new log file: %v, %v", fi.Mode(), err)
	}
}

// umask returns the process's umask, which the mode of a new file obeys.
func umask(t *testing.T) os.FileMode {
	f := filepath.Join(t.TempDir(), "umask")
	if err := os.WriteFile(f, nil, 0o777); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(f)
	return 0o777 &^ fi.Mode().Perm()
}

// TestReopenAfterRename is logrotate: rename the file, then SIGUSR1.
func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := Open(path, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, id := range []string{"a", "b", "c"} {
		l.Write(lineRecord(id))
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Write(lineRecord("d"))
	l.Write(lineRecord("e"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if got := strings.Join(requestIDs(t, string(old)), ","); got != "a,b,c" {
		t.Errorf("the rotated file holds %s, want a,b,c", got)
	}
	if got := strings.Join(requestIDs(t, string(cur)), ","); got != "d,e" {
		t.Errorf("the new file holds %s, want d,e", got)
	}
	if err := l.Reopen(); err != ErrClosed {
		t.Errorf("Reopen after Close = %v, want ErrClosed", err)
	}
}

func TestReopenFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "access.log")
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Dir(path), filepath.Join(dir, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Reopen with its directory gone = %v, want an error naming %s", err, path)
	}
	l.Write(lineRecord("kept"))
	l.Close()
	data, _ := os.ReadFile(filepath.Join(dir, "moved", "access.log"))
	if got := strings.Join(requestIDs(t, string(data)), ","); got != "kept" {
		t.Errorf("the old file holds %q, want the line written after the failed Reopen", got)
	}
}

// blockingWriter is a disk that hangs: Write waits until release is
// closed, after telling entered.
type blockingWriter struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
	out     lockedBuffer
}

func newBlockingWriter() *blockingWriter {
	return &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return w.out.Write(p)
}

// TestStuckDiskDrops: with the writer stuck, Write neither blocks nor
// grows memory; it drops, and the counter says how many.
func TestStuckDiskDrops(t *testing.T) {
	w := newBlockingWriter()
	dropped := NewDroppedCounter()
	lineLen := len(lineRecord("000").appendTo(nil, JSON))
	l := newLog(w, JSON, dropped, 10*lineLen) // room for 10 lines
	l.Write(lineRecord("000"))
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer never wrote")
	}
	// The writer holds line 0 and hangs. 10 lines fit; 90 are dropped.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := 1; i <= 100; i++ {
			l.Write(lineRecord(fmt.Sprintf("%03d", i)))
		}
	}()
	select {
	case <-wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on a stuck writer")
	}
	if got := testutil.ToFloat64(dropped); got != 90 {
		t.Errorf("dropped = %v, want 90", got)
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ids := requestIDs(t, w.out.String())
	if len(ids) != 11 || ids[0] != "000" || ids[10] != "010" {
		t.Errorf("written: %v, want lines 000 to 010", ids)
	}
	l.Write(lineRecord("late"))
	if got := testutil.ToFloat64(dropped); got != 91 {
		t.Errorf("dropped after a Write after Close = %v, want 91", got)
	}
}

// TestStuckPipeDrops is the same with a real pipe nobody reads.
func TestStuckPipeDrops(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dropped := NewDroppedCounter()
	l := newLog(w, JSON, dropped, 64<<10)
	// A pipe holds 64 KiB; the log 64 KiB more: a few thousand lines must
	// overflow both, and Write must still return at once.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 5000; i++ {
			l.Write(lineRecord("x"))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on a full pipe")
	}
	testkit.Eventually(t, 10*time.Second, "drops to be counted", func() bool { return testutil.ToFloat64(dropped) > 0 })
	// Unblock the writer so that Close can finish: read the pipe.
	go io.Copy(io.Discard, r)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	w.Close()
}

// TestQuietLineIsWritten: a line alone is written within flushInterval,
// without Close.
func TestQuietLineIsWritten(t *testing.T) {
	var w lockedBuffer
	l := newLog(&w, JSON, nil, bufferLimit)
	defer l.Close()
	l.Write(lineRecord("alone"))
	testkit.Eventually(t, 10*time.Second, "the line to be written", func() bool { return strings.Contains(w.String(), `"alone"`) })
}

// TestBusyLogBatches: lines are written in few large writes, not one each.
func TestBusyLogBatches(t *testing.T) {
	var w lockedBuffer
	l := newLog(&w, JSON, nil, bufferLimit)
	for i := range 1000 {
		l.Write(lineRecord(fmt.Sprint(i)))
	}
	l.Close()
	if n := len(requestIDs(t, w.String())); n != 1000 {
		t.Fatalf("%d lines written, want 1000", n)
	}
	// About 400 KiB: some seven writes of 64 KiB, more if a tick or a slow
	// machine splits them, but never anywhere near one a line.
	if w.writes > 50 {
		t.Errorf("1000 lines took %d write calls", w.writes)
	}
}

type failingWriter struct{}

func (failingWriter) Write(p []byte) (int, error) { return 0, io.ErrClosedPipe }

func TestFailedWriteCounts(t *testing.T) {
	dropped := NewDroppedCounter()
	l := newLog(failingWriter{}, Combined, dropped, bufferLimit)
	for range 5 {
		l.Write(fullRecord())
	}
	l.Close()
	if got := testutil.ToFloat64(dropped); got != 5 {
		t.Errorf("dropped = %v, want 5 lines lost to failed writes", got)
	}
}

// flakyWriter fails while fail is set.
type flakyWriter struct {
	fail atomic.Bool
	out  lockedBuffer
}

func (w *flakyWriter) Write(p []byte) (int, error) {
	if w.fail.Load() {
		return 0, errors.New("no space left on device")
	}
	return w.out.Write(p)
}

// TestOnErrorOncePerRun: a disk that keeps failing is reported once, and
// again only after it worked in between.
func TestOnErrorOncePerRun(t *testing.T) {
	w := &flakyWriter{}
	w.fail.Store(true)
	dropped := NewDroppedCounter()
	l := newLog(w, JSON, dropped, bufferLimit)
	var mu sync.Mutex
	var errs []string
	l.OnError(func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err.Error())
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(errs)
	}
	for _, step := range []struct {
		fail        bool
		id          string
		dropped     float64 // lines dropped by then
		wantReports int
	}{{true, "a", 1, 1}, {true, "b", 2, 1}, {false, "c", 2, 1}, {true, "d", 3, 2}} {
		w.fail.Store(step.fail)
		l.Write(lineRecord(step.id))
		testkit.Eventually(t, 10*time.Second, "line "+step.id+" to be handled", func() bool {
			if step.fail {
				return testutil.ToFloat64(dropped) == step.dropped
			}
			return strings.Contains(w.out.String(), `"`+step.id+`"`)
		})
		if got := count(); got != step.wantReports {
			t.Fatalf("after line %s: %d errors reported, want %d", step.id, got, step.wantReports)
		}
	}
	l.Close()
	if errs[0] != "access log: no space left on device" {
		t.Errorf("reported %q", errs[0])
	}
	if got := requestIDs(t, w.out.String()); len(got) != 1 || got[0] != "c" {
		t.Errorf("written %v, want c", got)
	}
}

func TestCloseFlushes(t *testing.T) {
	w := newBlockingWriter()
	l := newLog(w, JSON, nil, bufferLimit)
	l.Write(lineRecord("first"))
	<-w.entered
	for i := range 200 {
		l.Write(lineRecord(fmt.Sprint(i)))
	}
	closed := make(chan error)
	go func() { closed <- l.Close() }()
	close(w.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if ids := requestIDs(t, w.out.String()); len(ids) != 201 || ids[200] != "199" {
		t.Errorf("after Close the writer has %d lines, want 201", len(ids))
	}
	// Lines queued behind a busy write go out together.
	if w.out.writes != 2 {
		t.Errorf("%d write calls, want 2 (one line, then the 200 queued behind it)", w.out.writes)
	}
	if err := l.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// TestConcurrent runs writers, Reopen and Close together under -race:
// every line reaches one of the files, whole.
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	dropped := NewDroppedCounter()
	l, err := Open(path, "json", dropped)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				l.Write(lineRecord(fmt.Sprintf("%d-%d", g, i)))
			}
		})
	}
	for i := range 3 {
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, i)); err != nil {
			t.Fatal(err)
		}
		if err := l.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		n += len(requestIDs(t, string(data)))
	}
	if got := n + int(testutil.ToFloat64(dropped)); got != 2000 {
		t.Errorf("%d lines written + dropped, want 2000", got)
	}
}

func TestDroppedCounter(t *testing.T) {
	c := NewDroppedCounter()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP portico_access_log_dropped_total Access-log lines dropped instead of making a request wait: the log's buffer was full (a slow or stuck disk or pipe), a write failed, or the log was closed.
# TYPE portico_access_log_dropped_total counter
portico_access_log_dropped_total 0
`), DroppedMetric); err != nil {
		t.Error(err)
	}
}

func TestWriteDoesNotAllocate(t *testing.T) {
	for _, f := range []Format{JSON, Combined} {
		l := New(io.Discard, f, NewDroppedCounter())
		r := fullRecord()
		if n := testing.AllocsPerRun(1000, func() { l.Write(r) }); n != 0 {
			t.Errorf("format %d: Write made %v allocations, want 0", f, n)
		}
		l.Close()
	}
}

func BenchmarkWrite(b *testing.B) {
	for _, f := range []struct {
		name   string
		format Format
	}{{"json", JSON}, {"combined", Combined}} {
		b.Run(f.name, func(b *testing.B) {
			l := New(io.Discard, f.format, NewDroppedCounter())
			defer l.Close()
			r := fullRecord()
			b.ReportAllocs()
			for b.Loop() {
				l.Write(r)
			}
		})
	}
	b.Run("json/file/parallel", func(b *testing.B) {
		dropped := NewDroppedCounter()
		l, err := Open(filepath.Join(b.TempDir(), "access.log"), "json", dropped)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := fullRecord()
			for pb.Next() {
				l.Write(r)
			}
		})
		l.Close()
		b.ReportMetric(testutil.ToFloat64(dropped)/float64(b.N), "dropped/op")
	})
}

func BenchmarkFormat(b *testing.B) {
	r := fullRecord()
	buf := make([]byte, 0, 1024)
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = r.appendTo(buf[:0], JSON)
		}
	})
	b.Run("combined", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = r.appendTo(buf[:0], Combined)
		}
	})
}
