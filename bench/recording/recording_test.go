package recording

import (
	"bytes"
	"reflect"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := []Frame{
		{TimestampMs: 1000, ContentType: "text/plain; version=0.0.4", Body: []byte("up 1\n")},
		{TimestampMs: 3000, Body: []byte("# EOF\n")},
		{TimestampMs: 5000, ContentType: "application/openmetrics-text; version=1.0.0", Body: nil},
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, f := range in {
		if err := w.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	in[2].Body = []byte{}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n%+v\n%+v", in, out)
	}
	if _, err := Read(bytes.NewReader([]byte("not gzip"))); err == nil {
		t.Fatal("garbage read as a recording")
	}
}
