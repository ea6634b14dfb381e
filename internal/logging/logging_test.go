package logging

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestJournalLines(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, slog.LevelDebug, true).With("wan", "isp1")
	log.Debug("probe", "rtt", "1ms")
	log.Info("wan state", "to", "up")
	log.Warn("wan state", "to", "down", "cause", "3 rounds failed")
	log.Error("apply failed", "err", "boom\nsecond line")
	want := []string{
		`<7>level=DEBUG msg=probe wan=isp1 rtt=1ms`,
		`<6>level=INFO msg="wan state" wan=isp1 to=up`,
		`<4>level=WARN msg="wan state" wan=isp1 to=down cause="3 rounds failed"`,
		`<3>level=ERROR msg="apply failed" wan=isp1 err="boom\nsecond line"`,
	}
	if got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", buf.String(), strings.Join(want, "\n"))
	}
}

func TestPlainLinesHaveTimes(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, slog.LevelInfo, false).Info("x")
	if !strings.HasPrefix(buf.String(), "time=") {
		t.Fatalf("%q", buf.String())
	}
}

func TestUnderJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !UnderJournal(f) {
		t.Error("stream given by JOURNAL_STREAM not recognised")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1))
	if UnderJournal(f) {
		t.Error("a redirected stream taken for the journal")
	}
	t.Setenv("JOURNAL_STREAM", "")
	if UnderJournal(f) {
		t.Error("no JOURNAL_STREAM taken for the journal")
	}
}
