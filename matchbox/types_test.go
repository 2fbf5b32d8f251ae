package matchbox

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The profile key of each template kind is one of Profile's JSON keys,
// and TemplateRefs names each kind's template.
func TestTemplateRefsAndFields(t *testing.T) {
	var keys []string
	for f := range reflect.TypeFor[Profile]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		keys = append(keys, name)
	}
	p := &Profile{IgnitionID: "i.yaml", CloudID: "c.tmpl", GenericID: "g.tmpl"}
	refs := p.TemplateRefs()
	for i, k := range TemplateKinds {
		if !slices.Contains(keys, k.ProfileField()) {
			t.Errorf("kind %s: %q is not a profile key (%v)", k, k.ProfileField(), keys)
		}
		if i >= len(refs) || refs[i].Kind != k {
			t.Errorf("TemplateRefs = %v: no %s template at %d", refs, k, i)
		}
	}
}
