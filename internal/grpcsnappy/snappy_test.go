package grpcsnappy

import (
	"bytes"
	"io"
	"testing"

	"google.golang.org/grpc/encoding"
)

func TestRoundTrip(t *testing.T) {
	c := encoding.GetCompressor(Name)
	if c == nil {
		t.Fatal("snappy compressor not registered")
	}
	for _, size := range []int{0, 1, 1000, 200_000} {
		in := bytes.Repeat([]byte("node_cpu_seconds_total "), size/23+1)[:size]
		var buf bytes.Buffer
		w, err := c.Compress(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(in); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if size > 1000 && buf.Len() >= size {
			t.Errorf("size %d: compressed to %d bytes, expected smaller", size, buf.Len())
		}
		r, err := c.Decompress(&buf)
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(in, out) {
			t.Fatalf("size %d: round trip mismatch", size)
		}
	}
}
