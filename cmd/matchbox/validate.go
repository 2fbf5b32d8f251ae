package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/render"
	"matchbox.dev/matchbox/storage"
)

// validate checks a data dir the way serve reads it and lists every
// problem: JSON errors, bad selectors, missing references, duplicate
// default groups and selector sets, template, Butane and Ignition errors,
// templates that hit a render limit, and cloud templates that do not
// render to a #cloud-config YAML document or a #! script (refused by
// /cloud, as by poseidon/matchbox). It renders within the limits serve
// renders within, and stops when ctx ends (SIGINT, SIGTERM).
func validate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("matchbox validate", flag.ContinueOnError)
	dataPath := fs.String("data-path", "/var/lib/matchbox", "data dir to check (groups/, profiles/, ignition/, cloud/, generic/)")
	format := fs.String("o", "text", "output format: text or json")
	var lim renderLimits
	lim.define(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("-o: unknown format %q (text or json)", *format)
	}
	dd := storage.NewDataDir(*dataPath, slog.New(slog.DiscardHandler))
	objs, err := dd.Load(ctx)
	if err != nil {
		return err
	}
	snap := matchbox.NewSnapshot(objs)
	eng := render.NewEngine(render.Options{RenderTimeout: lim.timeoutValue(), RenderMaxBytes: lim.maxBytes()})
	probs := append([]matchbox.Problem{}, snap.Problems()...)
	probs = append(probs, eng.CheckTemplates(snap)...)
	probs = append(probs, eng.CheckGroups(ctx, snap)...)
	// Interrupted: what was found is printed, but the check is not done.
	interrupted := ctx.Err()

	errorsFound := 0
	for _, p := range probs {
		if p.Severity == matchbox.SeverityError {
			errorsFound++
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if probs == nil {
			probs = []matchbox.Problem{}
		}
		report := map[string]any{
			"data_path": *dataPath, "groups": len(snap.Groups()), "profiles": len(snap.Profiles()),
			"templates": len(snap.Templates()), "problems": probs,
		}
		if interrupted != nil {
			report["interrupted"] = true
		}
		if err := enc.Encode(report); err != nil {
			return err
		}
	} else {
		for _, p := range probs {
			fmt.Fprintln(stdout, p.String())
		}
		if interrupted == nil {
			fmt.Fprintf(stdout, "%s: %d groups, %d profiles, %d templates; %d errors, %d warnings\n",
				*dataPath, len(snap.Groups()), len(snap.Profiles()), len(snap.Templates()), errorsFound, len(probs)-errorsFound)
		}
	}
	if interrupted != nil {
		return fmt.Errorf("validate interrupted (%w) before every group was rendered: %d errors found so far", interrupted, errorsFound)
	}
	if errorsFound > 0 {
		return errProblems
	}
	return nil
}
