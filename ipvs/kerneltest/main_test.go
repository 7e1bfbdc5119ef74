package kerneltest

import (
	"testing"

	"github.com/l4lb/l4lb/integration/bed"
)

func TestMain(m *testing.M) { bed.Main(m) }
