package nftables

import (
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzDecoders feeds arbitrary bytes to every decoder of kernel answers
// and of names read back from the kernel: none may panic, and what parses
// must print back to itself.
func FuzzDecoders(f *testing.F) {
	good, _ := encodeElements([]Element{{Key: serviceKeyBytes(keyFor("11.0.0.1", "tcp", 80)), Goto: "svc-tcp-11.0.0.1-80"}, {Key: slotKey(3), Data: backendBytes(be(1))}}, true)
	f.Add(good, "svc-tcp-11.0.0.1-80")
	f.Add([]byte{0x10, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, "svc-udp-fd01_c__1-53")
	f.Add([]byte{}, "svc-tcp--1")
	f.Fuzz(func(t *testing.T, b []byte, name string) {
		_, _ = decodeElements(b)
		for _, m := range splitMsgs(b) {
			_ = extAckMsg(m)
			_ = extAckMsg(rawMsg{typ: unix.NLMSG_ERROR, flags: unix.NLM_F_ACK_TLVS, body: m.body})
		}
		if k, ok := keyOfChain(name); ok && nameOf(k).chain != name {
			t.Fatalf("chain %q parsed as %v, which prints as %q", name, k, nameOf(k).chain)
		}
		if k, ok := keyOfServiceBytes(b); ok {
			if got, ok2 := keyOfServiceBytes(serviceKeyBytes(k)); !ok2 || got != k {
				t.Fatalf("service key %x parsed as %v, which does not round-trip", b, k)
			}
		}
		if a, ok := backendOfBytes(b); ok {
			if got, ok2 := backendOfBytes(backendBytes(a)); !ok2 || got != a {
				t.Fatalf("backend %x parsed as %v, which does not round-trip", b, a)
			}
		}
	})
}
