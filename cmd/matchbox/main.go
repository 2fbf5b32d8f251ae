// Command matchbox is the matchbox network-boot server and its CLI.
//
//	matchbox serve [flags]        run the server
//	matchbox validate [flags]     check a data dir and list every problem
//	matchbox version              print the version
//	matchbox group|profile|template|machine|lease|token|update
//	                              use a running server's admin API
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"matchbox.dev/matchbox"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usage = `matchbox network-boots and provisions bare-metal machines.

Usage:
  matchbox serve [flags]      run the server (boot endpoints, DHCP, TFTP, admin API)
  matchbox validate [flags]   check a data dir and list every problem
  matchbox version            print the version
  matchbox group   list | get ID | apply -f FILE | delete ID
  matchbox profile list | get ID | apply -f FILE | delete ID
  matchbox template list | get KIND NAME | apply KIND -f FILE | delete KIND NAME
  matchbox machine list | get MAC | events MAC [-follow] | preview MAC | label MAC K=V | delete MAC
  matchbox machine bmc set MAC … | power MAC on|off|status | reinstall MAC … [-wait] | cancel MAC
  matchbox lease   list [-mac MAC] | release IP
  matchbox token   list | create -name NAME -role read|admin | revoke NAME
  matchbox update  group set NAME -channel C … | group list | get NAME | rm NAME
  matchbox update  pause NAME [-reason TEXT] | resume NAME
                              talk to a running server's admin API
                              ("matchbox group -help" for connection flags)
  matchbox release pull | list | rm
                              the local, verified mirror of Flatcar releases

Run "matchbox COMMAND -help" for a command's flags. Every flag can also be
set in the environment as MATCHBOX_<FLAG>, e.g. MATCHBOX_DATA_PATH.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, rest, stdout, stderr)
	case "validate":
		err = validate(ctx, rest, stdout, stderr)
	case "group", "profile":
		err = objectCLI(ctx, cmd, rest, stdout, stderr)
	case "token":
		err = tokenCLI(ctx, rest, stdout, stderr)
	case "template":
		err = templateCLI(ctx, rest, stdout, stderr)
	case "machine":
		err = machineCLI(ctx, rest, stdout, stderr)
	case "lease":
		err = leaseCLI(ctx, rest, stdout, stderr)
	case "update":
		err = updateCLI(ctx, rest, stdout, stderr)
	case "release":
		err = releaseCLI(ctx, rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		if strings.HasPrefix(cmd, "-") {
			// poseidon/matchbox takes its flags without a subcommand.
			err = serve(ctx, args, stdout, stderr)
			break
		}
		fmt.Fprintf(stderr, "matchbox: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errProblems):
		return 1
	default:
		fmt.Fprintf(stderr, "matchbox: %s\n", matchbox.EscapeLine(err.Error()))
		return 1
	}
}

var (
	// errUsage marks an error already reported with the usage text.
	errUsage = errors.New("usage")
	// errProblems marks a validate run that found errors (already printed).
	errProblems = errors.New("problems found")
)

// parseFlags parses args, then fills every flag not given on the command
// line from its MATCHBOX_* environment variable.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	_, err := parseFlagsSet(fs, args, stderr)
	return err
}

// parseFlagsSet is parseFlags that also returns the names of the flags
// set by the command line or the environment.
func parseFlagsSet(fs *flag.FlagSet, args []string, stderr io.Writer) (map[string]bool, error) {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return nil, errUsage
	}
	return applyEnv(fs)
}

// applyEnv sets the flags the command line did not from MATCHBOX_* in the
// environment, and returns the names of the flags set either way.
func applyEnv(fs *flag.FlagSet) (map[string]bool, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			set[f.Name] = true
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", env, v, err))
			}
		}
	})
	return set, errors.Join(errs...)
}

func envName(flagName string) string {
	return "MATCHBOX_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
