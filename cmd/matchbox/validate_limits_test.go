package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// busyDataDir is a data dir whose one group's generic template loops for
// ever and whose other group's makes a string of 3 GB.
func busyDataDir(t *testing.T) string {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "profiles", "busy.json"), `{"id": "busy", "generic_id": "busy.tmpl"}`)
	writeFile(t, filepath.Join(dir, "profiles", "big.json"), `{"id": "big", "generic_id": "big.tmpl"}`)
	writeFile(t, filepath.Join(dir, "generic", "busy.tmpl"), "{{range 1000000000000}}{{end}}")
	writeFile(t, filepath.Join(dir, "generic", "big.tmpl"), `{{repeat 3000000000 "x"}}`)
	writeFile(t, filepath.Join(dir, "groups", "busy.json"), `{"id": "busy", "profile": "busy", "selector": {"mac": "52:54:00:00:00:01"}}`)
	writeFile(t, filepath.Join(dir, "groups", "big.json"), `{"id": "big", "profile": "big", "selector": {"mac": "52:54:00:00:00:02"}}`)
	return dir
}

// TestValidateRenderLimits: validate renders within serve's limits and
// reports the templates that hit one, naming the setting.
func TestValidateRenderLimits(t *testing.T) {
	dir := busyDataDir(t)
	code, out := runCLI(t, nil, "validate", "-data-path", dir, "-render-timeout", "50ms")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		`group "busy", profile "busy": generic busy.tmpl: template: busy.tmpl:1:`,
		`render limit: the render ran past its deadline of 50ms (-render-timeout sets the limit)`,
		`group "big", profile "big": generic big.tmpl:`,
		`repeat would make 3000000000 bytes, more than 16 MiB (-render-max-mb sets the limit)`,
		"2 errors, 0 warnings",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
	for _, args := range [][]string{{"-render-timeout", "0s"}, {"-render-timeout", "x"}, {"-render-max-mb", "0"}, {"-render-max-mb", "70000"}} {
		for _, cmd := range []string{"validate", "serve"} {
			code, out := runCLI(t, nil, append([]string{cmd, "-data-path", dir}, args...)...)
			if code != 2 || !strings.Contains(out, "invalid value") || !strings.Contains(out, args[0]) {
				t.Errorf("%s %v: exit %d, want 2 and the reason:\n%s", cmd, args, code, out)
			}
		}
	}
}

// interruptedAfter is a context that ends the n-th time anyone looks at it:
// a validate run interrupted while it renders.
type interruptedAfter struct {
	context.Context
	cancel context.CancelFunc
	looks  atomic.Int64
	n      int64
}

func (c *interruptedAfter) Err() error {
	if c.looks.Add(1) == c.n {
		c.cancel()
	}
	return c.Context.Err()
}

// TestValidateStopsWhenInterrupted: validate stops rendering when its
// context ends, and says it did not finish.
func TestValidateStopsWhenInterrupted(t *testing.T) {
	dir := busyDataDir(t)
	inner, cancel := context.WithCancel(t.Context())
	defer cancel()
	ctx := &interruptedAfter{Context: inner, cancel: cancel, n: 1000}
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- validate(ctx, []string{"-data-path", dir, "-render-timeout", "1h"}, &stdout, &stderr)
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("validate did not stop")
	}
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "validate interrupted") {
		t.Errorf("validate = %v; want it interrupted", err)
	}
	if ctx.looks.Load() < ctx.n {
		t.Error("validate ended before its context did")
	}
	if strings.Contains(stdout.String(), "context canceled") || strings.Contains(stdout.String(), "errors,") {
		t.Errorf("an interrupted run reports no summary and no problem for being stopped:\n%s", stdout.String())
	}
}

// TestValidateStopsOnSIGTERM: a validate process rendering a template
// that never ends exits at SIGTERM, non-zero, saying why.
func TestValidateStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "profiles", "busy.json"), `{"id": "busy", "generic_id": "busy.tmpl"}`)
	writeFile(t, filepath.Join(dir, "generic", "busy.tmpl"), "{{range 1000000000000}}{{end}}")
	writeFile(t, filepath.Join(dir, "groups", "busy.json"), `{"id": "busy", "profile": "busy"}`)
	cmd := exec.Command(bin, "validate", "-data-path", dir, "-render-timeout", "1h")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})
	// The signal handler is in place long before validate renders; once
	// the process has spent 200 ms of CPU time, it is rendering.
	waitFor(t, time.Minute, "validate rendering", func() bool { return cpuTicks(t, cmd.Process.Pid) >= 20 })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("no exit after SIGTERM")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v; want exit code 1", err)
	}
	if !strings.Contains(out.String(), "matchbox: validate interrupted (context canceled) before every group was rendered") {
		t.Errorf("output:\n%s", out.String())
	}
}

// cpuTicks is the CPU time (user and system, in clock ticks) process pid
// has used, from /proc.
func cpuTicks(t *testing.T, pid int) int {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces), from
	// field 3: utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	fields := strings.Fields(string(stat[i+1:]))
	utime, _ := strconv.Atoi(fields[11])
	stime, _ := strconv.Atoi(fields[12])
	return utime + stime
}
