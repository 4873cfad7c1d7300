package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/proxy"
	"github.com/portico-proxy/portico/proxy/admin"
	"github.com/portico-proxy/portico/tlsmgr"
)

// drainTimeout bounds how long SIGTERM waits for in-flight requests.
const drainTimeout = 30 * time.Second

func newLogger(format string, w io.Writer) (*zap.Logger, error) {
	var enc zapcore.Encoder
	switch format {
	case "json", "":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		// The layout is also that of time fields (a certificate's
		// not_after, a retry's next_attempt): they need their date.
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("-log-format %q: use json or console", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), zap.InfoLevel)), nil
}

// app is a running Portico: the config in force, the certificate manager and
// the proxy. reload is shared by SIGHUP and the admin API.
type app struct {
	path   string
	logger *zap.Logger
	certs  *tlsmgr.Manager
	srv    *proxy.Server
	admin  *http.Server // nil when [listen] admin = ""

	mu  sync.Mutex // serialises reloads
	cfg *config.Config
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	var c commonFlags
	fs := newFlagSet("run", stderr, &c)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger, err := newLogger(c.logFormat, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "portico:", err)
		return 2
	}
	defer logger.Sync()
	cfg, err := config.Load(c.config)
	if err != nil {
		printConfigErrors(stderr, c.config, err)
		return 1
	}
	for _, w := range cfg.Warnings {
		logger.Warn("config warning", zap.String("warning", w))
	}
	memCtx, stopTuning := context.WithCancel(context.Background())
	defer stopTuning()
	go tuneMemory(memCtx)
	// Signals are caught before the start, so that a Ctrl-C or SIGTERM
	// during it is a clean stop once started, not the Go runtime's exit.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	a := &app{path: c.config, logger: logger, cfg: cfg}
	if err := a.start(); err != nil {
		logger.Error("cannot start", zap.Error(err))
		return 1
	}
	return a.wait(sigs)
}

func (a *app) start() error {
	certs, err := tlsmgr.New(a.cfg, a.logger.Named("tls"))
	if err != nil {
		return err
	}
	if err := certs.Check(a.cfg); err != nil {
		return err
	}
	a.certs = certs
	srv, err := proxy.New(a.cfg, certs, a.logger.Named("proxy"))
	if err != nil {
		return err
	}
	a.srv = srv
	adminAddr := "(off)"
	if a.cfg.Listen.Admin != "" {
		// Before the proxy listens, so that a taken admin address stops the
		// start with nothing served.
		a.admin, adminAddr, err = startAdmin(a.cfg.Listen, certs, srv, a.reload, a.logger.Named("admin"))
		if err != nil {
			return err
		}
	}
	if err := srv.Start(); err != nil {
		if a.admin != nil {
			a.admin.Close()
		}
		return err
	}
	httpAddr, httpsAddr := srv.Addrs()
	a.logger.Info("portico started", zap.String("version", versionString()), zap.String("config", a.cfg.Path),
		zap.String("http", httpAddr), zap.String("https", httpsAddr), zap.Bool("http3", a.cfg.Listen.HTTP3), zap.String("admin", adminAddr), zap.Int("sites", len(a.cfg.Sites)))
	certs.Start()
	if err := certs.Apply(context.Background(), a.cfg); err != nil {
		// checked above: only a change since (in the AWS environment,
		// say) gets here, and the proxy is already serving
		a.logger.Error("some sites' certificates are not managed", zap.Error(err))
	}
	return nil
}

// reload re-reads the config file. A valid config replaces the running one
// atomically; an invalid one is reported with every problem and changes
// nothing.
func (a *app) reload() error {
	// SIGHUP and the admin API may ask at once: one reload at a time, so
	// the last config read is the one in force.
	a.mu.Lock()
	defer a.mu.Unlock()
	cfg, err := config.Load(a.path)
	if err != nil {
		var problems []string
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, p := range errs {
				problems = append(problems, p.Error())
			}
		} else {
			problems = []string{err.Error()}
		}
		a.logger.Error("reload refused: the running config stays", zap.String("config", a.path), zap.Strings("problems", problems))
		return err
	}
	// every site's certificates must be manageable before anything is
	// swapped: a reload is applied whole or not at all
	if err := a.certs.Check(cfg); err != nil {
		a.logger.Error("reload refused: the running config stays", zap.String("config", a.path), zap.Error(err))
		return err
	}
	if err := a.srv.Swap(cfg); err != nil {
		a.logger.Error("reload refused: the running config stays", zap.Error(err))
		return err
	}
	if err := a.certs.Apply(context.Background(), cfg); err != nil {
		// Check passed a moment ago: the routes are swapped, the
		// certificates keep the previous config
		a.logger.Error("reload: the new routes are in force but the certificates keep the previous config", zap.Error(err))
		return err
	}
	if cfg.Listen.Admin != a.cfg.Listen.Admin || cfg.Listen.AdminToken != a.cfg.Listen.AdminToken {
		a.logger.Warn("[listen] admin or admin_token changed in the config; the admin API keeps the old ones until the next restart")
	}
	a.cfg = cfg
	for _, w := range cfg.Warnings {
		a.logger.Warn("config warning", zap.String("warning", w))
	}
	a.logger.Info("config reloaded", zap.String("config", cfg.Path), zap.Int("sites", len(cfg.Sites)))
	return nil
}

func (a *app) wait(sigs <-chan os.Signal) int {
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			a.reload()
			continue
		case syscall.SIGUSR1:
			// logrotate has moved the access log away: write a new one
			if err := a.srv.ReopenAccessLog(); err != nil {
				a.logger.Error("cannot reopen the access log; lines go to the old file", zap.Error(err))
			} else {
				a.logger.Info("access log reopened")
			}
			continue
		}
		a.logger.Info("shutting down: draining in-flight requests", zap.String("signal", sig.String()), zap.Duration("limit", drainTimeout))
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		adminDone := make(chan struct{})
		go func() {
			defer close(adminDone)
			if a.admin != nil && a.admin.Shutdown(ctx) != nil {
				a.admin.Close()
			}
		}()
		err := a.srv.Shutdown(ctx)
		<-adminDone
		cancel()
		a.certs.Stop()
		if err != nil {
			a.logger.Warn("drain cut short", zap.Error(err))
		}
		a.logger.Info("stopped")
		return 0
	}
	return 0
}

// startAdmin serves the admin API on l.Admin with Prometheus metrics: the Go
// runtime and process collectors, the proxy's request metrics and the
// certificates'. It returns the server and the address it listens on.
func startAdmin(l config.Listen, certs admin.Certs, srv *proxy.Server, reload func() error, logger *zap.Logger) (*http.Server, string, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, "", err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, "", err
	}
	if err := srv.RegisterMetrics(reg); err != nil {
		return nil, "", err
	}
	if err := reg.Register(admin.NewCertCollector(certs)); err != nil {
		return nil, "", err
	}
	if om, ok := certs.(interface {
		RegisterMetrics(prometheus.Registerer) error
	}); ok {
		if err := om.RegisterMetrics(reg); err != nil {
			return nil, "", err
		}
	}
	ln, err := admin.Listen(l.Admin)
	if err != nil {
		return nil, "", err
	}
	hs := &http.Server{
		Handler: admin.Handler(admin.Options{
			Certs:    certs,
			Reload:   reload,
			Gatherer: reg,
			Token:    l.AdminToken,
			Logger:   logger,
			Pools:    srv.PoolStatus,
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      clientTimeout, // a reload answers once applied
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(logger),
	}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin API stopped", zap.Error(err))
		}
	}()
	addr := ln.Addr().String()
	logger.Info("admin API listening", zap.String("addr", addr), zap.Bool("token_required", l.AdminToken != ""))
	return hs, addr, nil
}
