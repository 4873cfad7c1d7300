// Command portico is a TLS-terminating reverse proxy with automatic HTTPS.
//
//	portico run -config FILE        serve the sites in FILE
//	portico validate -config FILE   check FILE and summarise it
//	portico certs [-json]           list the running portico's certificates
//	portico retry NAME | --all      retry failing certificates now
//	portico reload                  make the running portico re-read its config
//	portico health -config FILE     exit 0 when the HTTPS listener answers TLS (HEALTHCHECK)
//	portico version                 print the version
//
// certs, retry and reload talk to the admin API named by [listen] admin in
// the config (-config FILE, default portico.toml), with [listen] admin_token.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: portico <command> [flags]

commands:
  run       serve the sites of the config (default -config portico.toml)
  validate  check the config and print a summary; exit 1 on any error
  certs     list the certificates of the running portico (-json for JSON)
  retry     retry a failing certificate now: retry NAME, or retry --all
  reload    make the running portico re-read its config
  health    exit 0 when the HTTPS listener answers TLS within 3 s, else 1
  version   print the version

certs, retry and reload reach the running portico through its admin API,
[listen] admin in the config.

Run 'portico <command> -h' for a command's flags.
`)
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "certs":
		return cmdCerts(rest, stdout, stderr)
	case "retry":
		return cmdRetry(rest, stdout, stderr)
	case "reload":
		return cmdReload(rest, stdout, stderr)
	case "health":
		return cmdHealth(rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "portico: unknown command %q\n\n", cmd)
	usage(stderr)
	return 2
}

func versionString() string {
	v := version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("portico %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// commonFlags are the flags every config-reading command takes.
type commonFlags struct {
	config    string
	logFormat string
}

func newFlagSet(name string, stderr io.Writer, c *commonFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("portico "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.config, "config", "portico.toml", "config file")
	fs.StringVar(&c.logFormat, "log-format", "json", `log format: "json" or "console"`)
	return fs
}
