package scenario

import "os"

func writeFile(path string) error { return os.WriteFile(path, []byte("fail\n"), 0o644) }

func removeFile(path string) { _ = os.Remove(path) }
