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
// and cloud templates that do not render to a #cloud-config YAML document
// or a #! script (refused by /cloud, as by poseidon/matchbox).
func validate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("matchbox validate", flag.ContinueOnError)
	dataPath := fs.String("data-path", "/var/lib/matchbox", "data dir to check (groups/, profiles/, ignition/, cloud/, generic/)")
	format := fs.String("o", "text", "output format: text or json")
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
	eng := render.NewEngine(render.Options{})
	probs := append([]matchbox.Problem{}, snap.Problems()...)
	probs = append(probs, eng.CheckTemplates(snap)...)
	probs = append(probs, eng.CheckGroups(ctx, snap)...)

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
		if err := enc.Encode(map[string]any{
			"data_path": *dataPath, "groups": len(snap.Groups()), "profiles": len(snap.Profiles()),
			"templates": len(snap.Templates()), "problems": probs,
		}); err != nil {
			return err
		}
	} else {
		for _, p := range probs {
			fmt.Fprintln(stdout, p.String())
		}
		fmt.Fprintf(stdout, "%s: %d groups, %d profiles, %d templates; %d errors, %d warnings\n",
			*dataPath, len(snap.Groups()), len(snap.Profiles()), len(snap.Templates()), errorsFound, len(probs)-errorsFound)
	}
	if errorsFound > 0 {
		return errProblems
	}
	return nil
}
