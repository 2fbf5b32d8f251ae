// Package render turns a selection (group and profile) and a machine's
// request into what the machine is served: iPXE and GRUB boot scripts,
// Ignition (raw JSON validated, or Butane templates rendered and
// translated), cloud-config, generic templates and the metadata env file.
//
// Templates are Go text/template source with poseidon/matchbox's function
// set and missingkey=error. Each template is parsed once per change of the
// catalog, never per request, and Butane translations are cached by the
// rendered text, bounded in memory.
package render
