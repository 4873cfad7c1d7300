// Command upstream is the HTTP/1.1 upstream of integration/bench/compare.sh:
// it answers every request with the same body (1 KiB by default), keeps
// connections alive, and prints the address it listens on.
//
//	go run ./integration/bench/compare/upstream -addr 127.0.0.1:0 -addr-file /tmp/up.addr
//
// With -free-ports N it prints N free loopback ports and exits (the script
// uses it to place nginx and Portico).
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	size := flag.Int("size", 1024, "response body size in bytes")
	addrFile := flag.String("addr-file", "", "also write the bound address to this file")
	freePorts := flag.Int("free-ports", 0, "print this many free loopback TCP ports, one a line, and exit")
	flag.Parse()
	if *freePorts > 0 {
		printFreePorts(*freePorts)
		return
	}

	body := make([]byte, *size)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	length := []string{strconv.Itoa(len(body))}
	ctype := []string{"text/plain; charset=utf-8"}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	bound := ln.Addr().String()
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(bound+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(bound)

	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Body != nil {
				io.Copy(io.Discard, r.Body)
			}
			h := w.Header()
			h["Content-Type"] = ctype
			h["Content-Length"] = length
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute, // longer than the proxies keep idle upstream connections
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// printFreePorts holds N listeners open at once, so the ports differ, and
// prints their ports.
func printFreePorts(n int) {
	var lns []net.Listener
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		lns = append(lns, ln)
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
}
