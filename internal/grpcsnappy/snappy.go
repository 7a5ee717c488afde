// Package grpcsnappy registers a gRPC compressor named "snappy" that uses the
// snappy framing format. Import it for its side effect in every process that
// speaks canopy's gRPC, and pass grpc.UseCompressor(grpcsnappy.Name) on calls.
package grpcsnappy

import (
	"io"
	"sync"

	"github.com/golang/snappy"
	"google.golang.org/grpc/encoding"
)

// Name is the grpc-encoding value of the compressor.
const Name = "snappy"

func init() { encoding.RegisterCompressor(&compressor{}) }

// compressor pools writers and readers: heartbeats are frequent and a fresh
// snappy writer allocates its 64 KiB buffers every time.
type compressor struct {
	writers sync.Pool
	readers sync.Pool
}

func (c *compressor) Name() string { return Name }

func (c *compressor) Compress(w io.Writer) (io.WriteCloser, error) {
	sw, ok := c.writers.Get().(*writer)
	if !ok {
		sw = &writer{Writer: snappy.NewBufferedWriter(w), pool: &c.writers}
	} else {
		sw.Reset(w)
	}
	return sw, nil
}

func (c *compressor) Decompress(r io.Reader) (io.Reader, error) {
	sr, ok := c.readers.Get().(*reader)
	if !ok {
		sr = &reader{Reader: snappy.NewReader(r), pool: &c.readers}
	} else {
		sr.Reset(r)
		sr.done = false
	}
	return sr, nil
}

type writer struct {
	*snappy.Writer
	pool *sync.Pool
}

func (w *writer) Close() error {
	defer w.pool.Put(w)
	return w.Writer.Close()
}

type reader struct {
	*snappy.Reader
	pool *sync.Pool
	done bool // returned to the pool; guards against a second Put
}

// Read returns the reader to the pool once the stream is exhausted; gRPC
// reads each message to io.EOF.
func (r *reader) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	if err == io.EOF && !r.done {
		r.done = true
		r.pool.Put(r)
	}
	return n, err
}
