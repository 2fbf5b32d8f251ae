// Package dhcp is matchbox's DHCP front-end, built on
// github.com/insomniacslk/dhcp: a full DHCP server owning address pools, a
// proxyDHCP server that only answers PXE clients beside an existing DHCP
// server, and the PXE/BINL exchange on UDP 4011.
//
// Every PXE answer is decided in one place (bootAnswer): iPXE is sent the
// boot script URL (never an iPXE binary again, so it cannot loop), UEFI
// HTTP Boot clients a full URL, and other PXE firmware the iPXE binary for
// its architecture (option 93) over TFTP. Whether a machine gets a boot
// answer at all is the core's decision, asked through Booter. Errors and
// drops are turned into log lines and metrics in Server.handle only.
package dhcp
