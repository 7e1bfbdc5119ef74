// Package integration holds l4lb's end-to-end tests: whole agents in network
// namespaces of a real kernel (the User-Mode Linux guest that package bed
// boots), exercised the way an operator would, with ipvsadm, dig and curl.
package integration
