package matchbox

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules keeps the package layout of the design true: the core
// imports only the standard library; front-ends never import each other,
// storage, bmc or release; storage, render, bmc and release never import
// front-ends or each other.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}:{{join .Imports \" \"}}", "matchbox.dev/matchbox/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "matchbox.dev/matchbox"
	frontEnds := []string{"http", "tftp", "dhcp", "api"}
	forbidden := map[string][]string{
		"storage": {"http", "tftp", "dhcp", "api", "render", "bmc", "release"},
		"render":  {"http", "tftp", "dhcp", "api", "storage", "bmc", "release"},
		"bmc":     {"http", "tftp", "dhcp", "api", "storage", "render", "release"},
		"release": {"http", "tftp", "dhcp", "api", "storage", "render", "bmc"},
	}
	for _, fe := range frontEnds {
		for _, other := range append(append([]string{}, frontEnds...), "storage", "bmc", "release") {
			if other != fe {
				forbidden[fe] = append(forbidden[fe], other)
			}
		}
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		for _, imp := range strings.Fields(imports) {
			if pkg == mod {
				if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
					t.Errorf("core imports %s: the core may import only the standard library", imp)
				}
				continue
			}
			rel := strings.TrimPrefix(pkg, mod+"/")
			top, _, _ := strings.Cut(rel, "/")
			for _, f := range forbidden[top] {
				if imp == mod+"/"+f || strings.HasPrefix(imp, mod+"/"+f+"/") {
					t.Errorf("%s imports %s, which the design forbids", pkg, imp)
				}
			}
		}
		checked++
	}
	if checked < 5 {
		t.Fatalf("only %d packages listed:\n%s", checked, out)
	}
}
