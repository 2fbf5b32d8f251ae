package main

import (
	"fmt"
	"log/slog"
	"os"
)

// checkSecretFile looks at the mode of a file holding a secret (what
// names it, e.g. a flag): a file others may write is refused, since anyone
// could replace the secret (a token, a key); a file others may read is
// started with a warning. A missing file is left to the code that reads
// it. Files matchbox creates itself are mode 0600.
func checkSecretFile(log *slog.Logger, what, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return nil
	}
	mode := st.Mode().Perm()
	if mode&0o022 != 0 {
		return fmt.Errorf("%s %s has mode %04o: group or others may write it and so replace the secret; chmod 600 it", what, path, mode)
	}
	if mode&0o044 != 0 {
		log.Warn("secret file readable by group or others: chmod 600 it", "what", what, "file", path, "mode", fmt.Sprintf("%04o", mode))
	}
	return nil
}
