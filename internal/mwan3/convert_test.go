package mwan3

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestConvertGolden converts every testdata/*.mwan3 and compares the YAML,
// the warnings and the errors with testdata/*.golden.
func TestConvertGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.mwan3")
	if err != nil || len(files) == 0 {
		t.Fatalf("testdata: %v %v", files, err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".mwan3")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Convert(f, data)
			var b strings.Builder
			if res != nil {
				b.WriteString(res.YAML)
				b.WriteString("#### warnings\n")
				for _, w := range res.Warnings {
					b.WriteString(w + "\n")
				}
			}
			if err != nil {
				b.WriteString("#### error\n" + err.Error() + "\n")
			}
			got := b.String()
			path := strings.TrimSuffix(f, ".mwan3") + ".golden"
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -update creates it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs (go test -update rewrites it):\n%s", path, got)
			}
		})
	}
}
