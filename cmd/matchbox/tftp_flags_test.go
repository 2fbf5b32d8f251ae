package main

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A TFTP bound out of range stops serve with an error naming the flag.
func TestTFTPFlagErrors(t *testing.T) {
	for _, tc := range []struct{ flag, value string }{
		{"-tftp-max-per-source", "0"},
		{"-tftp-max-transfers", "-1"},
		{"-tftp-unanswered-rate", "0"},
		{"-tftp-unanswered-rate", "NaN"},
		{"-tftp-max-client-timeout", "500ms"},
		{"-tftp-max-client-timeout", "256s"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, "serve", "-data-path", t.TempDir(), "-address", "127.0.0.1:0", "-api-address", "",
			"-assets-path", "", "-tftp-address", "127.0.0.1:0", tc.flag, tc.value)
		out, err := cmd.CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), tc.flag+" ") {
			t.Errorf("%s %s: %v, output %q; want exit 1 naming the flag", tc.flag, tc.value, err, out)
		}
	}
}
