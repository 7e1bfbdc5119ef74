// Package integration holds l4lb's end-to-end tests: whole agents in network
// namespaces of a real kernel, exercised the way an operator would, with
// ipvsadm or nft, dig and curl. IPVS tests run in the User-Mode Linux guest
// that package bed boots; the nftables tests run on the host kernel (see
// TestMain).
package integration
