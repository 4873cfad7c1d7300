package proxy

import (
	"bufio"
	"context"
	"net"
	"sync"
	"time"
)

// upstreamConns keeps the fast path's idle HTTP/1.1 connections to
// upstreams, by address, shared by every site so that they survive reloads
// (as the net/http Transport's do for the other paths).
//
// Unlike net/http's Transport, which runs two goroutines per connection
// and hands every request and response between them, a connection here is
// used by the goroutine serving the client: it writes the request and
// reads the answer itself. That is most of the CPU the fast path saves.
type upstreamConns struct {
	dialer  net.Dialer
	maxIdle int           // idle connections kept per address
	idleFor time.Duration // an idle connection is closed after this

	mu     sync.Mutex
	idle   map[string][]*upConn // oldest first
	closed bool
}

func newUpstreamConns() *upstreamConns {
	return &upstreamConns{
		dialer:  net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		maxIdle: 256,
		idleFor: 90 * time.Second,
		idle:    map[string][]*upConn{},
	}
}

// upConn is one connection to an upstream, with its buffers.
type upConn struct {
	net.Conn
	addr   string
	br     *bufio.Reader
	bw     *bufio.Writer
	head   []byte // the last response head read, reused
	idleAt time.Time
}

// get returns an idle connection to addr (reused true) or a new one.
// mustBeOpen makes sure an idle one is still open (a non-blocking peek):
// for a request that could not be sent again if the upstream had closed it.
func (p *upstreamConns) get(ctx context.Context, addr string, mustBeOpen bool) (uc *upConn, reused bool, err error) {
	for {
		p.mu.Lock()
		list := p.idle[addr]
		if len(list) == 0 {
			p.mu.Unlock()
			uc, err = p.dial(ctx, addr)
			return uc, false, err
		}
		// the most recently used: the least likely to have been closed
		uc = list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[addr] = list[:len(list)-1]
		p.mu.Unlock()
		if !mustBeOpen || stillOpen(uc.Conn) {
			return uc, true, nil
		}
		uc.Close()
	}
}

// dial opens a new connection to addr.
func (p *upstreamConns) dial(ctx context.Context, addr string) (*upConn, error) {
	c, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &upConn{Conn: c, addr: addr, br: bufio.NewReaderSize(c, 4<<10), bw: bufio.NewWriterSize(c, 4<<10)}, nil
}

// put keeps uc for the next request to its address, or closes it.
func (p *upstreamConns) put(uc *upConn) {
	uc.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[uc.addr]) >= p.maxIdle {
		p.mu.Unlock()
		uc.Close()
		return
	}
	p.idle[uc.addr] = append(p.idle[uc.addr], uc)
	p.mu.Unlock()
}

// sweep closes the connections idle for longer than idleFor.
func (p *upstreamConns) sweep(now time.Time) {
	var stale []*upConn
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

// run sweeps every half idleFor until ctx ends, then closes every idle
// connection and keeps no more.
func (p *upstreamConns) run(ctx context.Context) {
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
			p.idle = map[string][]*upConn{}
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
