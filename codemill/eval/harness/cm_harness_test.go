// HumanEval-X Go: TestMain around the test functions, in a file of its own so its imports (os among them) are
// not the sample's. The test binary runs with -test.paniconexit0 (an os.Exit(0) during a test fails it) and
// -test.v (a skipped test shows as --- SKIP, which the scorer refuses). When every test passed it reads the
// run's key from fd 3 and prints the proof of a pass: CODEMILL-PASS 1 <HMAC-SHA256(key, "codemill-pass 1")>.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		key, err := io.ReadAll(os.NewFile(3, "codemill-key"))
		if err == nil && len(key) > 0 {
			mac := hmac.New(sha256.New, key)
			mac.Write([]byte("codemill-pass 1"))
			fmt.Fprintf(os.Stdout, "\nCODEMILL-PASS 1 %s\n", hex.EncodeToString(mac.Sum(nil)))
		}
	}
	os.Exit(code)
}
