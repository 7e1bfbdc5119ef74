package integration

import (
	"testing"

	"github.com/l4lb/l4lb/integration/bed"
)

func TestMain(m *testing.M) {
	bed.Main(m, bed.Build("github.com/l4lb/l4lb/cmd/l4lb", "github.com/l4lb/l4lb/cmd/l4lb-demoapp"))
}
