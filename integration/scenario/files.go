package scenario

import (
	"os"

	"github.com/l4lb/l4lb/integration/bed"
)

type bedService = bed.IPVSService

func writeFile(path string) error { return os.WriteFile(path, []byte("fail\n"), 0o644) }

func removeFile(path string) { _ = os.Remove(path) }
