package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"matchbox.dev/matchbox"
)

// CheckTemplates parses every template and profile boot argument list in
// snap, validates raw Ignition and checks cloud templates without template
// actions (they render as they are) to be cloud-configs, reporting what
// cannot be served. It is cheap (no rendering) and runs after every catalog
// change.
func (e *Engine) CheckTemplates(snap *matchbox.Snapshot) []matchbox.Problem {
	var probs []matchbox.Problem
	for _, t := range snap.Templates() {
		if c := e.compile(t); c.err != nil {
			probs = append(probs, matchbox.Problem{Origin: t.Origin, Severity: matchbox.SeverityError, Message: c.err.Error()})
		}
	}
	for _, p := range snap.Profiles() {
		if c := e.compileArgs(p); c.err != nil {
			probs = append(probs, matchbox.Problem{Origin: p.Origin, Severity: matchbox.SeverityError, Message: c.err.Error()})
		}
		if p.Release != nil {
			if err := p.Release.Check(); err != nil {
				probs = append(probs, matchbox.Problem{Origin: p.Origin, Severity: matchbox.SeverityError, Message: err.Error()})
			}
		}
	}
	return probs
}

// sampleLabels is what a machine selected by g sends at least: its
// selectors, plus the labels iPXE's boot script always sends.
func sampleLabels(g *matchbox.Group) (map[string]string, string) {
	labels := map[string]string{
		"uuid": "00000000-0000-0000-0000-000000000000", "mac": "00:00:00:00:00:00",
		"domain": "", "hostname": "", "serial": "", "arch": "x86_64",
	}
	for k, v := range g.Selectors() {
		labels[k] = v
	}
	q := url.Values{}
	for k, v := range labels {
		q.Set(k, v)
	}
	return labels, q.Encode()
}

// CheckGroups renders, for every group, what a machine selected by it would
// get (boot arguments and each template its profile names), with the
// group's data and a sample request, and reports failures: missing
// template keys, template errors, Butane/Ignition errors and cloud
// templates that do not render to a cloud-config. It renders every group,
// so it belongs in `matchbox validate`, not in the serve path.
func (e *Engine) CheckGroups(ctx context.Context, snap *matchbox.Snapshot) []matchbox.Problem {
	var probs []matchbox.Problem
	for _, g := range snap.Groups() {
		if ctx.Err() != nil {
			break
		}
		p, ok := snap.Profile(g.Profile)
		if !ok {
			continue // reported by the snapshot
		}
		sel := matchbox.Selection{Group: g, Profile: p}
		labels, raw := sampleLabels(g)
		data := Data(g, Request{Labels: labels, RawQuery: raw, Host: "matchbox.example:8080"})
		if rel := e.ReleaseData(p, "matchbox.example:8080"); rel != nil {
			data["release"] = rel
		}
		report := func(what string, err error) {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return // stopped, not broken
			}
			var rerr *Error
			if errors.As(err, &rerr) {
				err = rerr.Err
			}
			probs = append(probs, matchbox.Problem{Origin: g.Origin, Severity: matchbox.SeverityError,
				Message: fmt.Sprintf("group %q, profile %q: %s: %v", g.ID, p.ID, what, err)})
		}
		if p.Boot.Kernel != "" || p.Release != nil {
			if _, err := e.bootArgs(ctx, sel, data); err != nil {
				report("boot args", err)
			}
		}
		if e.renderable(snap, matchbox.KindIgnition, p.IgnitionID) {
			if _, err := e.Ignition(ctx, snap, sel, data); err != nil {
				report("ignition "+p.IgnitionID, err)
			}
		}
		for _, k := range []struct {
			kind matchbox.TemplateKind
			name string
		}{{matchbox.KindCloud, p.CloudID}, {matchbox.KindGeneric, p.GenericID}} {
			if !e.renderable(snap, k.kind, k.name) {
				continue
			}
			// A refused cloud-config matches matchbox.ErrNotFound (its
			// answer is 404) and is reported like any render failure.
			if _, err := e.Template(ctx, snap, sel, k.kind, data); err != nil {
				report(string(k.kind)+" "+k.name, err)
			}
		}
	}
	return probs
}

// renderable reports whether a profile's template is there to render and
// does not fail on its own: a missing one is reported by the snapshot, and
// one that fails on its own (parse, raw Ignition, a cloud template without
// actions) by CheckTemplates, once, not again for every group using it.
func (e *Engine) renderable(snap *matchbox.Snapshot, kind matchbox.TemplateKind, name string) bool {
	if name == "" {
		return false
	}
	t, ok := snap.Template(kind, name)
	return ok && e.compile(t).err == nil
}

// CheckTemplate reports why a template could not be served, or nil: it
// must parse as a Go template (raw Ignition must be valid Ignition), and a
// Butane template without template actions must translate, a cloud
// template without them must be a cloud-config. The admin API refuses such
// templates on write.
func CheckTemplate(t *matchbox.Template) error {
	if t.Kind == matchbox.KindIgnition && matchbox.IsRawIgnition(t.Name) {
		_, err := validateRawIgnition(t.Content)
		return err
	}
	if _, err := newTemplate(t.Name).Parse(string(t.Content)); err != nil {
		return err
	}
	if bytes.Contains(t.Content, []byte("{{")) {
		return nil
	}
	switch t.Kind {
	case matchbox.KindIgnition:
		if _, err := TranslateButane(t.Content); err != nil {
			return err
		}
	case matchbox.KindCloud:
		return checkCloudConfig(t.Content)
	}
	return nil
}

// CheckProfile reports why a profile's boot arguments could not be
// rendered (a template error), or nil.
func CheckProfile(p *matchbox.Profile) error {
	if p.Release != nil {
		if err := p.Release.Check(); err != nil {
			return err
		}
	}
	for i, a := range p.Boot.Args {
		if !strings.Contains(a, "{{") {
			continue
		}
		if _, err := newTemplate(fmt.Sprintf("boot.args[%d]", i)).Parse(a); err != nil {
			return fmt.Errorf("boot.args[%d]: %w", i, err)
		}
	}
	return nil
}
