package gossip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/l4lb/l4lb/vip"
)

// Room refuses what PublishDelta would refuse, before anything is stored:
// past the count of registrations, and past the bytes of a record.
func TestRoomAgreesWithPublishDelta(t *testing.T) {
	c, err := New(Config{NodeName: "n1", BindAddr: "127.0.0.1", Logger: roomLogger()})
	if err != nil {
		t.Fatal(err)
	}
	reg := func(i int, name string) vip.Registration {
		return vip.Registration{
			VIP:     vip.Spec{Protocol: vip.TCP, Name: name, Port: 80},
			Backend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 8080),
			Weight:  1, Health: vip.Healthy,
		}
	}
	long := "/" + strings.Repeat("a", 60) + "/" + strings.Repeat("b", 60) + "/" + strings.Repeat("c", 60)
	// Fill the record by bytes with long names, in batches, asking Room
	// first as the agent does; every batch Room accepts must publish, and
	// the first it refuses must be refused by PublishDelta too.
	for i := 0; ; i += 1000 {
		batch := make([]vip.Registration, 1000)
		for j := range batch {
			batch[j] = reg(i+j, fmt.Sprintf("%s%d", long, i+j))
		}
		roomErr := c.Room(batch)
		pubErr := c.PublishDelta(batch, nil)
		if roomErr == nil && pubErr != nil {
			t.Fatalf("at %d registrations Room said yes and PublishDelta refused: %v", i, pubErr)
		}
		if roomErr != nil {
			if !errors.Is(roomErr, ErrRecordFull) || !errors.Is(pubErr, ErrRecordFull) {
				t.Fatalf("at %d registrations: Room %v, PublishDelta %v; want both ErrRecordFull", i, roomErr, pubErr)
			}
			if !strings.Contains(roomErr.Error(), "bytes") {
				t.Errorf("a record full by bytes says %q", roomErr)
			}
			break
		}
		if i > MaxRegistrations {
			t.Fatal("the record never filled up")
		}
	}
}

func TestRoomCountsRegistrations(t *testing.T) {
	c, err := New(Config{NodeName: "n1", BindAddr: "127.0.0.1", Logger: roomLogger()})
	if err != nil {
		t.Fatal(err)
	}
	add := make([]vip.Registration, MaxRegistrations+1)
	if err := c.Room(add); !errors.Is(err, ErrRecordFull) || !strings.Contains(err.Error(), "registrations, over") {
		t.Errorf("Room of %d registrations: %v, want ErrRecordFull by count", len(add), err)
	}
	if err := c.Room(add[:10]); err != nil {
		t.Errorf("Room of 10 registrations in an empty record: %v", err)
	}
}

func roomLogger() *logrus.Entry {
	l, _ := testLogger()
	return l
}
