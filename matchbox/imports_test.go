package matchbox

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImportRules keeps the package layout of the design true (see
// docs/architecture.md):
//   - the core imports only the standard library;
//   - the engines (recorder, power, reinstall, update) import the core
//     and each other downwards only (reinstall → power → recorder), never
//     a front-end, a store or a driver;
//   - front-ends (http, tftp, dhcp, api) never import each other, storage,
//     bmc or release;
//   - storage, render, bmc and release never import front-ends, engines or
//     each other;
//   - the helpers (loglimit, netlimit, metrics) import neither the core nor
//     any other package of matchbox but internal ones;
//   - wire formats (omaha) import only the standard library.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}:{{join .Imports \" \"}}", "matchbox.dev/matchbox/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "matchbox.dev/matchbox"
	frontEnds := []string{"http", "tftp", "dhcp", "api"}
	engines := []string{"recorder", "power", "reinstall", "update"}
	drivers := []string{"storage", "render", "bmc", "release"}
	helpers := []string{"loglimit", "netlimit", "metrics"}
	wire := []string{"omaha"}
	forbidden := map[string][]string{
		"recorder": {"power", "reinstall"},
		"power":    {"reinstall"},
	}
	for _, e := range engines {
		forbidden[e] = append(forbidden[e], append(append([]string{}, frontEnds...), drivers...)...)
	}
	for _, d := range drivers {
		for _, other := range append(append(append([]string{}, frontEnds...), engines...), drivers...) {
			if other != d {
				forbidden[d] = append(forbidden[d], other)
			}
		}
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
			if first, _, _ := strings.Cut(imp, "/"); slices.Contains(wire, top) && strings.Contains(first, ".") {
				t.Errorf("%s imports %s: a wire format imports only the standard library", pkg, imp)
			}
			if slices.Contains(helpers, top) && (imp == mod || strings.HasPrefix(imp, mod+"/") && !strings.HasPrefix(imp, mod+"/internal/")) {
				t.Errorf("%s imports %s: a helper imports only the standard library, its dependencies and matchbox/internal", pkg, imp)
			}
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
