// Package kerneltest proves package ipvs against the real kernel: its tests
// run in the UML guest of integration/bed, in network namespaces they build,
// and check what `ipvsadm -Ln`, `ip addr` and real TCP and UDP traffic show.
// It also holds the benchmarks against ipvsadm-restore.
package kerneltest
