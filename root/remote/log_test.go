package remote

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
)

// record i holds n samples of two series, timestamps i*1000+j.
func logRecord(i, n int) []Sample {
	out := make([]Sample, 0, n)
	for j := range n {
		ls := labels.FromStrings("__name__", "m", "series", fmt.Sprint(j%2))
		out = append(out, Sample{Labels: ls, T: int64(i*1000 + j), V: float64(i*100 + j)})
	}
	return out
}

// drain reads everything the cursor has, committing after each record.
func drain(t *testing.T, c *Cursor) (records, samples int) {
	t.Helper()
	for {
		rec, wait, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		if rec == nil {
			select {
			case <-wait:
				t.Fatal("the wait channel is closed with nothing new")
			default:
			}
			return records, samples
		}
		records++
		samples += len(rec.Samples)
		if err := c.Commit(rec.Next); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLogRoundTrip(t *testing.T) {
	l, err := OpenLog(t.TempDir(), LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := l.Cursor("prom")
	if err != nil {
		t.Fatal(err)
	}
	_, wait, _ := c.Next()
	in := []Sample{
		{Labels: labels.FromStrings("__name__", "up", "node", "n1"), T: 1000, V: 1},
		{Labels: labels.FromStrings("__name__", "load", "node", "n1"), T: 1000, V: 0.25},
		{Labels: labels.FromStrings("__name__", "up", "node", "n1"), T: -5, V: math.Float64frombits(value.StaleNaN)},
	}
	if err := l.Append(in); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wait:
	default:
		t.Fatal("an append did not wake the reader")
	}
	rec, _, err := c.Next()
	if err != nil || rec == nil || len(rec.Samples) != 3 {
		t.Fatalf("read %v %v", rec, err)
	}
	// Grouped by series in order of first appearance, each series' samples in order.
	if got := rec.Samples[1]; got.T != -5 || !value.IsStaleNaN(got.V) || got.Labels.Get("__name__") != "up" {
		t.Fatalf("samples %v", rec.Samples)
	}
	if rec.Samples[2].Labels.Get("__name__") != "load" || rec.Samples[2].V != 0.25 {
		t.Fatalf("samples %v", rec.Samples)
	}
}

// A restart resumes each endpoint at its last commit: what was read but
// not committed is read again, nothing committed is.
func TestLogRestart(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLog(dir, LogConfig{SegmentBytes: 200})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := l.Append(logRecord(i, 4)); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := l.Cursor("vm")
	for i := range 6 {
		rec, _, err := c.Next()
		if err != nil || rec == nil {
			t.Fatal(rec, err)
		}
		if i < 4 {
			if err := c.Commit(rec.Next); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A torn frame at the end, as a crash mid-write leaves it.
	segs, _ := segmentIndexes(dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments: the log did not roll", len(segs))
	}
	f, _ := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%08d", segs[len(segs)-1])), os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{200, 0, 0, 0, 1, 2, 3})
	f.Close()

	l, err = OpenLog(dir, LogConfig{SegmentBytes: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Append(logRecord(10, 4)); err != nil {
		t.Fatal(err)
	}
	c, _ = l.Cursor("vm")
	rec, _, err := c.Next()
	if err != nil || rec.Samples[0].T != 4000 {
		t.Fatalf("after restart the first record read is %v (%v), want record 4", rec, err)
	}
	c.Commit(rec.Next)
	if records, _ := drain(t, c); records != 6 {
		t.Fatalf("read %d more records, want 6 (5..10)", records)
	}
	// Segments every endpoint committed past are gone; a new endpoint
	// starts at the oldest record kept (the written segment's).
	if segs, _ := segmentIndexes(dir); len(segs) != 1 {
		t.Fatalf("%d segments kept after every endpoint took them all", len(segs))
	}
	fresh, _ := l.Cursor("new")
	if records, _ := drain(t, fresh); records < 1 || records > 3 {
		t.Fatalf("a new endpoint read %d records, want those of the last segment", records)
	}
}

// Past the bound, whole segments go, oldest first, and an endpoint that
// was behind counts exactly the samples it never read.
func TestLogBound(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l, err := OpenLog(t.TempDir(), LogConfig{SegmentBytes: 300, MaxBytes: 1500, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	slow, _ := l.Cursor("slow")
	fast, _ := l.Cursor("fast")
	// slow reads two records and holds them (in flight, not committed).
	appended := 0
	for i := range 2 {
		l.Append(logRecord(i, 5))
		appended += 5
	}
	for range 2 {
		if rec, _, _ := slow.Next(); rec == nil {
			t.Fatal("nothing to read")
		}
	}
	for i := 2; i < 60; i++ {
		l.Append(logRecord(i, 5))
		appended += 5
		drain(t, fast)
	}
	if l.Bytes() > 1500+300 {
		t.Fatalf("log holds %d bytes, bound 1500", l.Bytes())
	}
	_, read := drain(t, slow)
	if got := int(slow.Dropped()); read+got+10 != appended {
		t.Fatalf("slow: read %d + in flight 10 + dropped %d != appended %d", read, got, appended)
	}
	if slow.Dropped() == 0 || fast.Dropped() != 0 {
		t.Fatalf("dropped: slow %d, fast %d", slow.Dropped(), fast.Dropped())
	}

	// By age: a stalled endpoint loses segments older than MaxAge.
	aged, _ := OpenLog(t.TempDir(), LogConfig{SegmentBytes: 300, MaxAge: time.Minute, Now: func() time.Time { return now }})
	defer aged.Close()
	stalled, _ := aged.Cursor("stalled")
	for i := range 20 {
		aged.Append(logRecord(i, 5))
	}
	now = now.Add(2 * time.Minute)
	aged.Append(logRecord(20, 5))
	_, read = drain(t, stalled)
	// Segments whose newest record is over a minute old went; the one
	// being written stays whole.
	if int(stalled.Dropped())+read != 105 || stalled.Dropped() < 80 {
		t.Fatalf("aged: read %d, dropped %d of 105", read, stalled.Dropped())
	}
}

// A corrupted record is an error, never silently skipped.
func TestLogCorruption(t *testing.T) {
	dir := t.TempDir()
	l, _ := OpenLog(dir, LogConfig{})
	l.Append(logRecord(0, 4))
	l.Append(logRecord(1, 4))
	path := filepath.Join(dir, "00000001")
	b, _ := os.ReadFile(path)
	b[frameHeader+2] ^= 0xff
	os.WriteFile(path, b, 0o644)
	c, _ := l.Cursor("x")
	if _, _, err := c.Next(); err == nil {
		t.Fatal("a corrupted record was read")
	}
	l.Close()
}
