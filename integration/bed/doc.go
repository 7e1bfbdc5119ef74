// Package bed is l4lb's real-kernel test bed. The host kernels l4lb is
// developed and tested on have no IPVS and no dummy interfaces, so a test
// binary whose TestMain calls bed.Main re-executes itself inside a fresh
// User-Mode Linux guest (Debian's user-mode-linux: a Linux 6.1 kernel that
// runs as a plain process, with the host's filesystem as its root), loads the
// modules l4lb needs there, and reports pass or fail through go test as usual.
//
// Inside the guest, tests build their own topology from network namespaces
// (NewNetns, Link, NewCluster), so no test touches the host's network stack.
//
// linux.uml runs with a ptrace wrapper preloaded (uml/xstate.c) that lets
// UML 6.1 save and restore guest threads' registers on hosts whose XSAVE
// area is larger than UML's buffer (AVX-512, AMX); see integration/README.md.
//
// A test bed that cannot start is a failure with the reason, never a skip.
// With L4LB_KERNEL=host the tests run on the host kernel directly instead,
// for hosts whose kernel does have IPVS.
package bed
