// Package render turns a selection (group and profile) and a machine's
// request into what the machine is served: iPXE and GRUB boot scripts,
// Ignition (raw JSON validated, or Butane templates rendered and
// translated), cloud-config, generic templates and the metadata env file.
//
// Templates are Go text/template source with missingkey=error, as in
// poseidon/matchbox: every text/template built-in means what it means in
// Go, and sprig's functions whose names are not built-ins are an extension.
// Each template is parsed once per change of the catalog, never per
// request, and Butane translations are cached by the rendered text, bounded
// in memory.
//
// Any machine that boots can make the engine render, so a render runs
// within limits (Options): a deadline, the caller's context, a bound on its
// output and on the values its functions make, and on nesting. The checks
// are built into each template's parse tree when it is parsed (program.go)
// and around the functions it calls (guard.go); a render that hits one
// fails with a *LimitError inside the *Error.
package render
