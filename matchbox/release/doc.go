// Package release keeps a verified local mirror of Flatcar Container Linux
// releases under matchbox's assets directory, so machines boot and install
// Flatcar without reaching the internet.
//
// # Layout
//
// The release server holds <base>/<board>/<version>/ and
// <base>/<board>/current/, base being https://<channel>.release.flatcar-linux.net
// (or Config.BaseURL) and board amd64-usr or arm64-usr. A Mirror copies
// four files of a release, each with its detached OpenPGP signature:
//
//	version.txt                            (+ .sig)
//	flatcar_production_pxe.vmlinuz         (+ .sig)
//	flatcar_production_pxe_image.cpio.gz   (+ .sig)
//	flatcar_production_image.bin.bz2       (+ .sig)
//
// into the layout `flatcar-install -b http://<matchbox>/assets/flatcar/<channel>/<board>`
// reads:
//
//	<assets>/flatcar/<channel>/<board>/<version>/   the files and their .sig files
//	<assets>/flatcar/<channel>/<board>/current      relative symlink to the newest version
//	<assets>/flatcar/<channel>/<board>/.partial-<version>/       a download in progress
//	<assets>/flatcar/<channel>/<board>/.partial-<version>.lock   its lock file
//	<assets>/flatcar/<channel>/<board>/.lock                     guards current and removals
//
// The HTTP front-end refuses dot-prefixed path components, so nothing in
// staging is ever served.
//
// # Update payloads
//
// With Config.UpdateBaseURL set (Flatcar's is DefaultUpdateBaseURL), a
// pull also mirrors the release's update payloads from
// <UpdateBaseURL>/<board>/<version>/: the OS payload
// flatcar_production_update.gz and the extension payloads of
// Config.Extensions (oem-<ID>.gz, flatcar-<NAME>.gz). They go into the
// version directory, beside the release's files, which so also mirrors the
// update server's layout (an Omaha answer's codebase is the version
// directory's URL):
//
//	<version>/flatcar_production_update.gz   the verified payloads
//	<version>/oem-<ID>.gz, flatcar-<NAME>.gz
//	<version>/payloads.json                  {"payloads": [{name, size, sha1, sha256,
//	                                          new_partition_size, new_partition_sha256}]}
//	<version>/.<name>.part                   a payload download in progress
//
// Hashes in payloads.json are base64, as Omaha answers carry them; the OS
// payload is listed first. Payloads are files like the others: staged
// with a new release and placed with it in one rename, so a release is
// placed only once its configured payloads are verified too. A release
// already placed (pulled before payloads or an extension were configured)
// gets the missing payloads through hidden .<name>.part files renamed in
// once verified, payloads.json replaced after each (a new file renamed
// over it); a payload listed there with the file of that size is not
// fetched again.
//
// A payload is verified while it is written, as the client that installs
// it will verify it (VerifyPayload: update_engine for the OS payload;
// VerifyExtensionPayload: ue-rs for extensions), with Config.PayloadKey or
// the embedded copy of Flatcar's payload key (DefaultPayloadKey). One that
// does not verify is deleted and fails the pull (ErrBadPayload); a
// download cut off is kept and resumed, like the release's files.
//
// # Guarantees
//
// Nothing unverified appears under a non-dot path. Each file streams from
// the network once into <staging>/<name>.part while its signature is
// checked over the same bytes (memory does not grow with the file size);
// only a verified file is renamed to <name>, and only when all four are
// verified is the staging directory renamed to <version>, then current
// replaced (a new link renamed over the old one) if the version is newer
// than the one current names. Versions compare numerically, component by
// component: 4081.2.0 < 4081.10.0 < 4152.0.0. A failed pull leaves current
// and every version directory as they were.
//
// An interrupted download (a dropped connection, a cancelled context, a
// transfer with no data for two minutes) keeps its .part file, and the
// next Pull resumes it with a Range request, still verifying the whole
// file: the bytes on disk are hashed first, then the new ones. A file
// whose signature fails is deleted, never resumed.
//
// # Signatures
//
// Signatures verify with the operator's key (Config.Key), or with the
// embedded copy of Flatcar's image signing key (DefaultKey). Flatcar adds a
// signing subkey every year, and a subkey's signatures stay valid after it
// expires: a signature verifies when its key was unexpired when the
// signature was made. Signatures by revoked keys never verify.
//
// # Locking
//
// Pulls of the same channel, board and version wait for each other, within
// a process (a mutex per version) and across processes sharing the assets
// directory (flock(2) on .partial-<version>.lock); a pull that waited
// finds the release in place and downloads nothing. Moving current,
// placing a release and removing one hold the board's .lock the same way.
// Lock files are removed when released.
package release
