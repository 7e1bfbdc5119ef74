// Package genl is a small generic-netlink client for the kernel's IPVS
// family, built for bulk work: it packs many commands into each datagram,
// asks the kernel to acknowledge only failures and the last command of each
// datagram, and attributes every error to the command that caused it by its
// sequence number.
//
// It owns the IPVS wire format (commands, attributes, replies) and the
// netlink socket. It does not decide what to program (package ipvs does),
// keeps no state about the table, and retries nothing: Do reports each
// command's result and the caller decides.
package genl
