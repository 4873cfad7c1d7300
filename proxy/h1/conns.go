package h1

import (
	"bufio"
	"context"
	"net"
	"sync"
	"time"
)

// Conns keeps idle HTTP/1.1 connections to upstreams, by address, shared
// by every site and every request path so that they survive reloads.
//
// Unlike net/http's Transport, which runs two goroutines per connection
// and hands every request and response between them, a connection here is
// used by the goroutine serving the client: it writes the request and
// reads the answer itself. That is most of the CPU the fast path saves.
type Conns struct {
	dialer  net.Dialer
	maxIdle int           // idle connections kept per address
	idleFor time.Duration // an idle connection is closed after this

	mu     sync.Mutex
	idle   map[string][]*Conn // oldest first
	closed bool
}

func NewConns() *Conns {
	return &Conns{
		dialer:  net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		maxIdle: 256,
		idleFor: 90 * time.Second,
		idle:    map[string][]*Conn{},
	}
}

// Conn is one connection to an upstream, with its buffers.
type Conn struct {
	net.Conn
	Addr   string        // host:port
	Reader *bufio.Reader // the upstream's bytes
	Writer *bufio.Writer // to the upstream
	head   []byte        // the last response head read, reused
	idleAt time.Time
	peek   *peeker // checks it while idle

	// deadline is the read deadline asked for (SetReadDeadline), armed
	// the one the connection has; see arm.
	deadline, armed time.Time
}

// SetReadDeadline sets the deadline of the reads that follow. It is armed
// on the connection only when one of them has to wait for bytes: the
// deadline of a response head is set and cleared for every request, and
// most heads and bodies arrive whole in the first read, so arming each
// change cost two runtime timer updates per request for nothing (5% of
// the fast path's CPU, pprof under wrk). Only reads through Reader see
// it; the idle check (quiet) clears one that expired.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.deadline = t
	return nil
}

// arm gives the connection the deadline asked for before a read waits.
// One armed earlier than asked by less than a sixteenth of the time left
// is kept: a response head's deadline is asked anew for every request,
// a few microseconds after the last, and re-arming it each time is what
// SetReadDeadline avoids; it is re-armed once it lags that far behind.
func (c *Conn) arm() error {
	want, have := c.deadline, c.armed
	if want.Equal(have) {
		return nil
	}
	if !want.IsZero() && !have.IsZero() && !want.Before(have) && want.Sub(have) < time.Until(want)/16 {
		return nil
	}
	c.armed = want
	return c.Conn.SetReadDeadline(want)
}

// connReader is what a Conn's Reader reads from: the connection, with
// the deadline asked for armed first.
type connReader Conn

func (r *connReader) Read(p []byte) (int, error) {
	c := (*Conn)(r)
	if err := c.arm(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// quiet reports whether the idle connection can carry a request (see
// Get). A deadline still armed from its last answer, and expired while it
// idled, is cleared first: the check is a read, and would fail on it.
func (c *Conn) quiet() bool {
	c.deadline = time.Time{}
	if !c.armed.IsZero() && !c.armed.After(time.Now()) {
		if c.arm() != nil {
			return false
		}
	}
	return c.peek.quiet()
}

// Get returns an idle connection to addr (reused true) or a new one.
//
// An idle connection is used only if nothing has arrived on it since it
// was put back (a non-blocking peek): an upstream that sent more than its
// answer (a body longer than its Content-Length, a body after HEAD, 204 or
// 304, a second answer) would otherwise have those bytes read as the
// answer to the next request, which may be another client's. The same
// peek finds most connections the upstream closed while idle. net/http's
// Transport learns both from the read loop it runs on every connection
// ("Unsolicited response received on idle HTTP channel").
//
// A new connection is dialled within dialTimeout (0: the pool's own, 5 s).
func (p *Conns) Get(ctx context.Context, addr string, dialTimeout time.Duration) (uc *Conn, reused bool, err error) {
	for {
		p.mu.Lock()
		list := p.idle[addr]
		if len(list) == 0 {
			p.mu.Unlock()
			uc, err = p.Dial(ctx, addr, dialTimeout)
			return uc, false, err
		}
		// the most recently used: the least likely to have been closed
		uc = list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[addr] = list[:len(list)-1]
		p.mu.Unlock()
		if uc.quiet() {
			return uc, true, nil
		}
		uc.Close()
	}
}

// Dial opens a new connection to addr.
func (p *Conns) Dial(ctx context.Context, addr string, timeout time.Duration) (*Conn, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	uc := &Conn{Conn: c, Addr: addr, Writer: bufio.NewWriterSize(c, 4<<10), peek: newPeeker(c)}
	uc.Reader = bufio.NewReaderSize((*connReader)(uc), 4<<10)
	return uc, nil
}

// Put keeps uc for the next request to its address, or closes it. The
// caller puts a connection back only when the exchange ended exactly on the
// end of the answer; put itself closes one with bytes already read past it.
func (p *Conns) Put(uc *Conn) {
	if uc.Reader.Buffered() > 0 {
		uc.Close() // the upstream sent more than the answer
		return
	}
	uc.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[uc.Addr]) >= p.maxIdle {
		p.mu.Unlock()
		uc.Close()
		return
	}
	p.idle[uc.Addr] = append(p.idle[uc.Addr], uc)
	p.mu.Unlock()
}

// MayResend reports whether a request that failed may go again, once, on
// a new connection, as net/http's Transport does: it went over a pooled
// connection (reused) that the upstream had closed while it idled, nothing
// came back (nothingRead), and sending it twice is safe (replayable: no
// body and an idempotent method). Both request paths follow this rule.
func MayResend(reused, replayable, nothingRead bool) bool {
	return reused && replayable && nothingRead
}

// Idle returns how many idle connections to addr the pool keeps.
func (p *Conns) Idle(addr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle[addr])
}

// sweep closes the connections idle for longer than idleFor.
func (p *Conns) sweep(now time.Time) {
	var stale []*Conn
	p.mu.Lock()
	for addr, list := range p.idle {
		n := 0
		for n < len(list) && now.Sub(list[n].idleAt) > p.idleFor {
			n++
		}
		if n == 0 {
			continue
		}
		stale = append(stale, list[:n]...)
		if n == len(list) {
			delete(p.idle, addr)
		} else {
			p.idle[addr] = append(list[:0], list[n:]...)
		}
	}
	p.mu.Unlock()
	for _, uc := range stale {
		uc.Close()
	}
}

// Run sweeps every half idleFor until ctx ends, then closes every idle
// connection and keeps no more.
func (p *Conns) Run(ctx context.Context) {
	t := time.NewTicker(p.idleFor / 2)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			p.sweep(now)
		case <-ctx.Done():
			p.mu.Lock()
			p.closed = true
			idle := p.idle
			p.idle = map[string][]*Conn{}
			p.mu.Unlock()
			for _, list := range idle {
				for _, uc := range list {
					uc.Close()
				}
			}
			return
		}
	}
}
