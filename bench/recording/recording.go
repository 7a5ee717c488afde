// Package recording owns the format of recorded scrapes: real exporter
// output captured over time (canopyctl record) and replayed by the bench
// and by tests, so measurements run on what real targets send.
//
// A recording is a gzip stream of frames, each a header line
//
//	# canopy-recording <unix-ms> <content-type> <length>
//
// followed by length bytes of the scrape body.
package recording

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
)

// Frame is one scrape.
type Frame struct {
	TimestampMs int64
	ContentType string
	Body        []byte
}

const magic = "# canopy-recording"

// Writer appends frames to a recording.
type Writer struct {
	gz *gzip.Writer
}

// NewWriter starts a recording on w.
func NewWriter(w io.Writer) *Writer {
	gz, _ := gzip.NewWriterLevel(w, gzip.BestCompression)
	return &Writer{gz: gz}
}

// Write appends one frame.
func (w *Writer) Write(f Frame) error {
	ct := url.QueryEscape(f.ContentType) // no spaces in the header line
	if ct == "" {
		ct = "-"
	}
	if _, err := fmt.Fprintf(w.gz, "%s %d %s %d\n", magic, f.TimestampMs, ct, len(f.Body)); err != nil {
		return err
	}
	_, err := w.gz.Write(f.Body)
	return err
}

// Close flushes the recording.
func (w *Writer) Close() error { return w.gz.Close() }

// Read returns every frame of a recording.
func Read(r io.Reader) ([]Frame, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	br := bufio.NewReader(gz)
	var out []Frame
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF && line == "" {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("recording: frame %d header: %w", len(out), err)
		}
		var f Frame
		var ct string
		var n int
		if !strings.HasPrefix(line, magic+" ") {
			return nil, fmt.Errorf("recording: frame %d: bad header %q", len(out), line)
		}
		if _, err := fmt.Sscanf(line[len(magic):], " %d %s %d", &f.TimestampMs, &ct, &n); err != nil {
			return nil, fmt.Errorf("recording: frame %d: bad header %q: %w", len(out), line, err)
		}
		if ct != "-" {
			if f.ContentType, err = url.QueryUnescape(ct); err != nil {
				return nil, fmt.Errorf("recording: frame %d: content type: %w", len(out), err)
			}
		}
		f.Body = make([]byte, n)
		if _, err := io.ReadFull(br, f.Body); err != nil {
			return nil, fmt.Errorf("recording: frame %d body: %w", len(out), err)
		}
		out = append(out, f)
	}
}

// ReadFile reads a recording from a file.
func ReadFile(path string) ([]Frame, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}
