// Package storagetest is the conformance suite every matchbox store passes.
//
// A store's test file calls Run with a Harness that knows how to create the
// store holding some seed objects (and, when the store persists, how to
// reopen it). Read cases run against every store; write cases run when the
// store also implements Writer, token cases when it implements TokenStore.
package storagetest
