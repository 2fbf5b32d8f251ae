// Package netboot holds matchbox's end-to-end network boot tests: real
// firmware (SeaBIOS with QEMU's iPXE NIC ROM, and OVMF UEFI with its own
// PXE client) boots under QEMU, in a network namespace the test creates,
// through matchbox's own DHCP, TFTP and HTTP into a small Linux initramfs
// that fetches its Ignition config. scripts/install-test-deps installs
// what they need; they run as root (network namespaces, tap devices).
package netboot
