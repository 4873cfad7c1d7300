// Package accesslog writes the access log: one line per request, as JSON or
// in the Apache/nginx combined format ([log] access, access_format).
//
// A request must never wait for the disk. Write formats the line in the
// caller's goroutine (into a pooled buffer, without allocating) and appends
// it to a bounded in-memory buffer; one background goroutine writes that
// buffer out, all lines gathered since its last write in one write call,
// when 64 KiB have gathered or every quarter second (as nginx's
// access_log buffer= flush= do, but without a request ever writing). If
// the disk is slow or stuck and the buffer is full, the line is dropped and
// counted (portico_access_log_dropped_total): a slow disk costs log lines,
// never latency or memory.
//
// Reopen, on SIGUSR1, makes logrotate's rename-then-signal work: lines
// written before the call go to the old (renamed) file, lines after to a
// new file at the configured path.
package accesslog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DroppedMetric is the name of the counter NewDroppedCounter makes.
const DroppedMetric = "portico_access_log_dropped_total"

// NewDroppedCounter returns the counter of dropped lines for Open; the
// caller registers it.
func NewDroppedCounter() prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{
		Name: DroppedMetric,
		Help: "Access-log lines dropped instead of making a request wait: the log's buffer was full (a slow or stuck disk or pipe), a write failed, or the log was closed.",
	})
}

// bufferLimit is how many bytes of lines wait for the writer at most: about
// 2,500 typical lines, enough to ride out a disk that stalls for tens of
// milliseconds at 50,000 requests a second. Two buffers of this size exist
// per Log (one filling, one being written).
const bufferLimit = 1 << 20

// flushBytes is how much the buffer holds before the writer is woken to
// write it; below that, lines wait for the next tick of flushInterval. A
// request thus costs a copy into memory, and not a wake-up of the writer
// goroutine (which costs more than formatting the line) or a write call.
const flushBytes = 64 << 10

// flushInterval is the longest a line waits in memory: short enough for an
// operator watching the log with tail -f.
const flushInterval = 250 * time.Millisecond

// maxScratch is the largest per-line buffer kept in the pool; a line with
// an enormous URI is formatted in a buffer that is then let go.
const maxScratch = 16 << 10

// Log is an open access log, safe for concurrent use. Each Log runs one
// writer goroutine until Close: a config reload that replaces the log
// closes the old one (a request still holding it then drops and counts its
// line instead of writing to a closed file). A nil *Log is a log that is
// off: its methods do nothing, so a caller needs no branch.
type Log struct {
	format  Format
	dropped prometheus.Counter // nil: not counted
	scratch sync.Pool          // *[]byte, a line being formatted
	limit   int
	flushAt int // min(flushBytes, limit/4)

	mu     sync.Mutex
	buf    []byte // lines waiting for the writer, cap limit
	closed bool

	wake   chan struct{}   // buf reached flushBytes; cap 1
	reopen chan chan error // Reopen's requests
	quit   chan struct{}   // closed by Close
	done   chan struct{}   // closed when the writer has returned

	// Owned by the writer goroutine.
	out      io.Writer
	file     *os.File // nil when out is not a file Open opened
	path     string   // the file's path, for Reopen; "" when not a file
	spare    []byte   // the buffer being written
	closeErr error
	failing  bool // the last write failed

	onError atomic.Pointer[func(error)]
}

// Format is the layout of a line.
type Format int

const (
	// JSON is one JSON object per line, fields in the order of Record.
	JSON Format = iota
	// Combined is the Apache/nginx combined format.
	Combined
)

// ParseFormat reads access_format: "json" (also ""), or "combined".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "json":
		return JSON, nil
	case "combined":
		return Combined, nil
	}
	return 0, fmt.Errorf("access log format %q: want \"json\" or \"combined\"", s)
}

// Open opens the access log named by [log] access: "stdout", "stderr", or
// a file, created (0644) if missing and appended to. Its directory must
// exist: a missing directory is a config error, not something to create
// with guessed permissions. An empty path means the log is off: Open
// returns a nil *Log and no error. dropped, if not nil, counts the lines
// dropped (see NewDroppedCounter).
func Open(path, format string, dropped prometheus.Counter) (*Log, error) {
	if path == "" {
		return nil, nil
	}
	f, err := ParseFormat(format)
	if err != nil {
		return nil, err
	}
	switch path {
	case "stdout":
		return newLog(os.Stdout, f, dropped, bufferLimit), nil
	case "stderr":
		return newLog(os.Stderr, f, dropped, bufferLimit), nil
	}
	file, err := openFile(path)
	if err != nil {
		return nil, err
	}
	return newFileLog(file, path, f, dropped, bufferLimit), nil
}

// New returns a log that writes to w, which it never closes; Reopen does
// nothing. It is for tests and for callers that own their writer.
func New(w io.Writer, format Format, dropped prometheus.Counter) *Log {
	return newLog(w, format, dropped, bufferLimit)
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("access log %s: directory %s does not exist", path, filepath.Dir(path))
	}
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return f, nil
}

// newLog starts a log writing to w, which it never closes.
func newLog(w io.Writer, f Format, dropped prometheus.Counter, limit int) *Log {
	l := makeLog(w, f, dropped, limit)
	go l.run()
	return l
}

// newFileLog starts a log writing to file, opened at path, which Reopen
// replaces and Close closes.
func newFileLog(file *os.File, path string, f Format, dropped prometheus.Counter, limit int) *Log {
	l := makeLog(file, f, dropped, limit)
	l.file, l.path = file, path
	go l.run()
	return l
}

func makeLog(w io.Writer, f Format, dropped prometheus.Counter, limit int) *Log {
	l := &Log{
		format:  f,
		dropped: dropped,
		limit:   limit,
		flushAt: min(flushBytes, limit/4),
		buf:     make([]byte, 0, limit),
		spare:   make([]byte, 0, limit),
		wake:    make(chan struct{}, 1),
		reopen:  make(chan chan error),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		out:     w,
	}
	l.scratch.New = func() any { b := make([]byte, 0, 512); return &b }
	return l
}

// Write logs one request. It never blocks on the disk: the line is
// formatted and queued, or dropped and counted when the queue is full or
// the log closed. It reads r only during the call and never changes it,
// so r's byte slices may point into buffers the caller reuses afterwards.
func (l *Log) Write(r *Record) {
	if l == nil {
		return
	}
	bp := l.scratch.Get().(*[]byte)
	line := r.appendTo((*bp)[:0], l.format)
	l.mu.Lock()
	if l.closed || len(l.buf)+len(line) > l.limit {
		l.mu.Unlock()
		l.drop(1)
	} else {
		before := len(l.buf)
		l.buf = append(l.buf, line...)
		after := len(l.buf)
		l.mu.Unlock()
		if before < l.flushAt && after >= l.flushAt {
			select {
			case l.wake <- struct{}{}:
			default: // the writer is already due to look
			}
		}
		if after > l.limit/2 {
			// The writer is runnable but not running: every P is busy
			// with requests that do not block. Yielding lets it run
			// before the buffer is full; it costs this request a trip
			// through the run queue, never a wait for the disk.
			runtime.Gosched()
		}
	}
	if cap(line) <= maxScratch {
		*bp = line
		l.scratch.Put(bp)
	}
}

func (l *Log) drop(n int) {
	if l.dropped != nil && n > 0 {
		l.dropped.Add(float64(n))
	}
}

// ErrClosed is Reopen's error after Close.
var ErrClosed = errors.New("access log closed")

// Reopen reopens the log's file at its path, for SIGUSR1 after logrotate
// renamed it: the lines written before the call are written to the old
// file first, and the new file receives every line after. If the new file
// cannot be opened the log keeps writing to the old one and Reopen returns
// the error. It does nothing for stdout, stderr or a log made by New.
// Reopen waits for the write in progress, if any.
func (l *Log) Reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	req := make(chan error, 1)
	select {
	case l.reopen <- req:
	case <-l.done:
		return ErrClosed
	}
	return <-req
}

// Close writes every line queued, closes the file (never stdout or
// stderr) and stops the writer. Lines written after Close are dropped and
// counted. It waits for the writer, so a stuck disk makes Close wait.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.quit)
	<-l.done
	return l.closeErr
}

// run is the writer goroutine: the only one that touches the file.
func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(flushInterval)
	defer tick.Stop()
	for {
		select {
		case <-l.wake:
			l.flush()
		case <-tick.C:
			l.flush()
		case req := <-l.reopen:
			l.flush()
			req <- l.reopenFile()
		case <-l.quit:
			l.flush() // Close set closed first: nothing is added after this
			if l.file != nil {
				l.closeErr = l.file.Close()
			}
			return
		}
	}
}

// flush writes every queued line in one write call. A failed write loses
// its lines, counted as dropped: retrying would only make the queue fill.
func (l *Log) flush() {
	l.mu.Lock()
	l.buf, l.spare = l.spare[:0], l.buf
	l.mu.Unlock()
	if len(l.spare) == 0 {
		return
	}
	n, err := l.out.Write(l.spare)
	if err == nil {
		l.failing = false
		return
	}
	if !l.failing {
		l.failing = true
		if f := l.onError.Load(); f != nil {
			(*f)(fmt.Errorf("access log: %w", err))
		}
	}
	// Counted after the report, so that one who sees the count sees the
	// report too.
	l.drop(bytes.Count(l.spare[max(0, min(n, len(l.spare))):], []byte{'\n'}))
}

// OnError has f told when writing the log starts failing (a full disk, a
// closed pipe): once per run of failed writes, not once per write, so that
// a full disk makes one line in Portico's own log, not thousands; the lines
// lost are counted as dropped. f runs on the writer goroutine and must not
// block. Set it right after Open.
func (l *Log) OnError(f func(error)) {
	if l != nil {
		l.onError.Store(&f)
	}
}

func (l *Log) reopenFile() error {
	f, err := openFile(l.path)
	if err != nil {
		return err
	}
	old := l.file
	l.file, l.out = f, f
	return old.Close()
}
