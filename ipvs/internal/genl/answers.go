package genl

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The kernel's answers, read datagram by datagram. Each collector is fed
// every datagram the socket receives during one exchange and ignores the
// messages that are not for it (another port, another sequence number).

// batchAnswers collects the answers to one datagram of n commands numbered
// first..first+n-1. The kernel runs the commands in order and answers a
// command when it fails or carries NLM_F_ACK; the last one always does, so
// its answer ends the exchange and every command without a failure before it
// succeeded.
type batchAnswers struct {
	pid      uint32
	first    uint32
	errs     []error // the kernel's error per command
	answered []bool  // an answer (ack or error) arrived for the command
	done     bool    // the last command's answer arrived
}

func newBatchAnswers(pid, first uint32, n int) *batchAnswers {
	return &batchAnswers{pid: pid, first: first, errs: make([]error, n), answered: make([]bool, n)}
}

func (a *batchAnswers) finished() bool { return a.done }

func (a *batchAnswers) consume(datagram []byte) error {
	return forEachMsg(datagram, func(m nlMsg) error {
		idx := m.seq - a.first // wraps to a large number for earlier sequences
		if m.pid != a.pid || idx >= uint32(len(a.errs)) || m.typ != unix.NLMSG_ERROR {
			return nil
		}
		kerr, err := decodeAck(m)
		if err != nil {
			return err
		}
		if kerr != nil {
			a.errs[idx] = kerr
		}
		a.answered[idx] = true
		if idx == uint32(len(a.errs)-1) {
			a.done = true
		}
		return nil
	})
}

// dumpAnswers collects the entries of one dump (services, or the real
// servers of one service) until NLMSG_DONE or an error.
type dumpAnswers struct {
	pid, seq    uint32
	family      uint16 // the IPVS family id: the type of entry messages
	dests       bool   // entries are real servers, not services
	svcFamily   uint16 // address family of the service whose real servers these are
	services    []Service
	destList    []Dest
	interrupted bool  // the table changed during the dump
	err         error // the kernel's error for the dump
	done        bool
}

func (d *dumpAnswers) finished() bool { return d.done }

func (d *dumpAnswers) consume(datagram []byte) error {
	return forEachMsg(datagram, func(m nlMsg) error {
		if m.pid != d.pid || m.seq != d.seq || d.done {
			return nil
		}
		if m.flags&unix.NLM_F_DUMP_INTR != 0 {
			d.interrupted = true
		}
		switch m.typ {
		case unix.NLMSG_DONE:
			d.done = true
			// The payload, when there is one, is the dump's final status.
			if len(m.data) >= 4 {
				if code := int32(native.Uint32(m.data)); code < 0 && code >= -4095 {
					d.err = &kernelError{Errno: unix.Errno(-code)}
				}
			}
		case unix.NLMSG_ERROR:
			kerr, err := decodeAck(m)
			if err != nil {
				return err
			}
			d.done = true
			if kerr != nil {
				d.err = kerr
			}
		case d.family:
			if d.dests {
				dst, err := decodeDest(m.data, d.svcFamily)
				if err != nil {
					return err
				}
				d.destList = append(d.destList, dst)
				return nil
			}
			svc, err := decodeService(m.data)
			if err != nil {
				return err
			}
			d.services = append(d.services, svc)
		}
		return nil
	})
}

// familyAnswer collects the controller's answer to a family lookup.
type familyAnswer struct {
	pid, seq uint32
	id       uint16
	err      error
	done     bool
}

func (f *familyAnswer) finished() bool { return f.done }

func (f *familyAnswer) consume(datagram []byte) error {
	return forEachMsg(datagram, func(m nlMsg) error {
		if m.pid != f.pid || m.seq != f.seq || f.done {
			return nil
		}
		switch m.typ {
		case unix.GENL_ID_CTRL:
			id, err := decodeFamilyID(m.data)
			if err != nil {
				return fmt.Errorf("family lookup: %w", err)
			}
			f.id = id
		case unix.NLMSG_ERROR:
			kerr, err := decodeAck(m)
			if err != nil {
				return err
			}
			f.done = true
			if kerr != nil {
				f.err = kerr
			} else if f.id == 0 {
				f.err = fmt.Errorf("family lookup acknowledged without a family id")
			}
		}
		return nil
	})
}
