package faults

import (
	"testing"

	"github.com/l4lb/l4lb/integration/bed"
)

// TestMain boots the UML guest (bed.Main) with the agent and the demo app
// built on the host.
func TestMain(m *testing.M) {
	bed.Main(m, bed.Build("github.com/l4lb/l4lb/cmd/l4lb", "github.com/l4lb/l4lb/cmd/l4lb-demoapp"))
}
