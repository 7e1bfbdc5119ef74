// Package guesttest tests package genl against the real kernel, in the UML
// guest of the integration test bed, and benchmarks it there against
// ipvsadm-restore and moby/ipvs. It has no code of its own.
package guesttest
