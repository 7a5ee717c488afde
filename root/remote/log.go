package remote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
)

// Log is the root's durable queue for remote write: an append-only,
// segmented log of records, each the samples of one commit (a child's
// heartbeat, the aggregates of a window). The root appends before it
// acknowledges anything to the tree; each endpoint reads from its own
// cursor, which it advances only past records its sink accepted, so a
// root restart or a sink outage loses nothing within the bound. Past the
// bound (total bytes, or the age of a segment's newest record) whole
// segments go, oldest first, and the samples an endpoint had not yet sent
// from them are counted, never silently lost.
//
// A record is a frame: length (4 bytes), CRC-32C of the payload (4),
// sample count (4), then the payload, snappy-compressed and
// self-contained (labels of every series it carries), so a reader can
// start at any record. A torn frame at the end of the newest segment (a
// crash mid-write) is cut off when the log is opened.
type Log struct {
	dir string
	cfg LogConfig

	mu       sync.Mutex
	segs     []segment // oldest first; the last one is written
	file     *os.File
	size     int64 // bytes of the written segment
	notify   chan struct{}
	cursors  map[string]*Cursor
	buf, enc []byte
}

// LogConfig bounds the log.
type LogConfig struct {
	// SegmentBytes starts a new segment past this size.
	SegmentBytes int64
	// MaxBytes and MaxAge bound what is kept for endpoints that are
	// behind (0: no bound of that kind).
	MaxBytes int64
	MaxAge   time.Duration
	Now      func() time.Time
}

type segment struct {
	index  int
	size   int64
	newest time.Time // when the last record was appended
}

// Position is a place in the log: a segment and a byte offset in it.
type Position struct {
	Segment int
	Offset  int64
}

const frameHeader = 12

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenLog opens (or creates) the log in dir.
func OpenLog(dir string, cfg LogConfig) (*Log, error) {
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = 64 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	l := &Log{dir: dir, cfg: cfg, notify: make(chan struct{}), cursors: map[string]*Cursor{}}
	idx, err := segmentIndexes(dir)
	if err != nil {
		return nil, err
	}
	for _, i := range idx {
		fi, err := os.Stat(l.segPath(i))
		if err != nil {
			return nil, err
		}
		l.segs = append(l.segs, segment{index: i, size: fi.Size(), newest: fi.ModTime()})
	}
	if len(l.segs) == 0 {
		l.segs = []segment{{index: 1, newest: cfg.Now()}}
	}
	last := &l.segs[len(l.segs)-1]
	valid, err := validPrefix(l.segPath(last.index))
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(l.segPath(last.index), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(valid); err != nil { // a torn frame from a crash
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(valid, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	l.file, l.size, last.size = f, valid, valid
	return l, nil
}

func (l *Log) segPath(i int) string { return filepath.Join(l.dir, fmt.Sprintf("%08d", i)) }

func segmentIndexes(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		if i, err := strconv.Atoi(e.Name()); err == nil && len(e.Name()) == 8 {
			out = append(out, i)
		}
	}
	sort.Ints(out)
	return out, nil
}

// validPrefix is the length of the file's leading run of whole, intact
// frames.
func validPrefix(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var off int64
	for {
		_, n, err := readFrame(f, off)
		if err != nil {
			return off, nil
		}
		off += n
	}
}

// readFrame reads the frame at off: its payload and its whole length.
func readFrame(f io.ReaderAt, off int64) ([]byte, int64, error) {
	var h [frameHeader]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		return nil, 0, err
	}
	n := binary.LittleEndian.Uint32(h[0:4])
	payload := make([]byte, n)
	if _, err := f.ReadAt(payload, off+frameHeader); err != nil {
		return nil, 0, err
	}
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(h[4:8]) {
		return nil, 0, errCorrupt
	}
	return payload, frameHeader + int64(n), nil
}

func frameSamples(f io.ReaderAt, off int64) (int, int64, error) {
	var h [frameHeader]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		return 0, 0, err
	}
	return int(binary.LittleEndian.Uint32(h[8:12])), frameHeader + int64(binary.LittleEndian.Uint32(h[0:4])), nil
}

var errCorrupt = errors.New("remote log: checksum mismatch")

// Append writes one record with samples; when it returns, the record is
// in the operating system's hands (it survives the process being killed)
// and every cursor will read it.
func (l *Log) Append(samples []Sample) error {
	if len(samples) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = encodeRecord(l.buf[:0], samples)
	l.enc = snappy.Encode(l.enc[:cap(l.enc)], l.buf)
	if len(l.enc) > math.MaxUint32 || len(samples) > math.MaxUint32 {
		return fmt.Errorf("remote log: record too large")
	}
	if l.size > 0 && l.size+frameHeader+int64(len(l.enc)) > l.cfg.SegmentBytes {
		if err := l.roll(); err != nil {
			return err
		}
	}
	frame := make([]byte, frameHeader, frameHeader+len(l.enc))
	binary.LittleEndian.PutUint32(frame[0:4], uint32(len(l.enc)))
	binary.LittleEndian.PutUint32(frame[4:8], crc32.Checksum(l.enc, castagnoli))
	binary.LittleEndian.PutUint32(frame[8:12], uint32(len(samples)))
	frame = append(frame, l.enc...)
	if _, err := l.file.Write(frame); err != nil {
		// Cut what may have been written, so the next frame starts clean.
		_ = l.file.Truncate(l.size)
		_, _ = l.file.Seek(l.size, io.SeekStart)
		return fmt.Errorf("remote log: %w", err)
	}
	l.size += int64(len(frame))
	last := &l.segs[len(l.segs)-1]
	last.size, last.newest = l.size, l.cfg.Now()
	close(l.notify)
	l.notify = make(chan struct{})
	return l.enforceBound()
}

// roll syncs and closes the written segment and starts the next one.
// Must hold mu.
func (l *Log) roll() error {
	if err := l.file.Sync(); err != nil {
		return fmt.Errorf("remote log: %w", err)
	}
	if err := l.file.Close(); err != nil {
		return fmt.Errorf("remote log: %w", err)
	}
	next := l.segs[len(l.segs)-1].index + 1
	f, err := os.OpenFile(l.segPath(next), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("remote log: %w", err)
	}
	l.file, l.size = f, 0
	l.segs = append(l.segs, segment{index: next, newest: l.cfg.Now()})
	return nil
}

// Sync flushes the written segment to stable storage.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.file.Sync()
}

// Close syncs and closes the log.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.file.Sync()
	return errors.Join(err, l.file.Close())
}

// enforceBound removes the oldest closed segments while the log is over
// its bound; cursors still in them lose what they had not read, counted
// in their Dropped. Must hold mu.
func (l *Log) enforceBound() error {
	now := l.cfg.Now()
	for len(l.segs) > 1 {
		var total int64
		for _, s := range l.segs {
			total += s.size
		}
		oldest := l.segs[0]
		overBytes := l.cfg.MaxBytes > 0 && total > l.cfg.MaxBytes
		overAge := l.cfg.MaxAge > 0 && now.Sub(oldest.newest) > l.cfg.MaxAge
		if !overBytes && !overAge {
			return nil
		}
		if err := l.dropOldest(); err != nil {
			return err
		}
	}
	return nil
}

// dropOldest removes the oldest segment. Must hold mu.
func (l *Log) dropOldest() error {
	oldest := l.segs[0]
	path := l.segPath(oldest.index)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("remote log: %w", err)
	}
	for _, c := range l.cursors {
		if c.pos.Segment > oldest.index {
			continue
		}
		// What the endpoint already read is in its hands; what it had
		// not read is lost.
		from := c.pos.Offset
		if c.read.Segment > oldest.index {
			from = oldest.size
		} else if c.read.Segment == oldest.index {
			from = max(from, c.read.Offset)
		}
		lost := 0
		for off := from; off < oldest.size; {
			n, size, err := frameSamples(f, off)
			if err != nil {
				break
			}
			lost += n
			off += size
		}
		c.dropped += uint64(lost)
		c.pos = Position{Segment: l.segs[1].index}
		if c.read.Segment <= oldest.index {
			c.read = c.pos
		}
		if err := c.save(); err != nil {
			f.Close()
			return err
		}
	}
	f.Close()
	l.segs = l.segs[1:]
	return os.Remove(path)
}

// Bytes is the log's size on disk.
func (l *Log) Bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	return total
}

// Cursor is one endpoint's place in the log: where it reads next, and
// how far its sink has taken everything (committed, persisted in the
// log's directory so it survives restarts). Records read but not yet
// committed are in the endpoint's hands; after a restart they are read
// again.
type Cursor struct {
	log     *Log
	name    string
	pos     Position // committed; guarded by log.mu
	read    Position // next record to read; guarded by log.mu
	dropped uint64   // samples lost past the bound; guarded by log.mu
	file    *os.File // the segment being read (reader goroutine only)
	fileIdx int
}

// Cursor returns the named endpoint's cursor, at its saved position or,
// for a new endpoint, at the oldest record kept.
func (l *Log) Cursor(name string) (*Cursor, error) {
	if strings.ContainsAny(name, `/\`) || name == "" {
		return nil, fmt.Errorf("remote log: bad endpoint name %q", name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.cursors[name]; ok {
		return c, nil
	}
	c := &Cursor{log: l, name: name, pos: Position{Segment: l.segs[0].index}}
	defer func() { c.read = c.pos }()
	b, err := os.ReadFile(c.path())
	switch {
	case err == nil:
		if _, err := fmt.Sscanf(string(b), "%d %d", &c.pos.Segment, &c.pos.Offset); err != nil {
			return nil, fmt.Errorf("remote log: cursor %s: %w", name, err)
		}
		if c.pos.Segment < l.segs[0].index { // its data went past the bound while we were down
			c.pos = Position{Segment: l.segs[0].index}
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	l.cursors[name] = c
	return c, nil
}

func (c *Cursor) path() string { return filepath.Join(c.log.dir, "cursor-"+c.name) }

// save writes the position atomically. Must hold log.mu.
func (c *Cursor) save() error {
	tmp := c.path() + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", c.pos.Segment, c.pos.Offset), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.path())
}

// Record is what a cursor read: the samples, the position after them,
// and the record's size in the log.
type Record struct {
	Samples []Sample
	Next    Position
	Bytes   int64
}

// Next returns the next record, or, when the cursor has read everything,
// a channel that closes when more is appended. Only one goroutine may
// read a cursor.
func (c *Cursor) Next() (*Record, <-chan struct{}, error) {
	l := c.log
	l.mu.Lock()
	from := c.read
	if from.Segment < l.segs[0].index { // the bound took what we had not read
		from = Position{Segment: l.segs[0].index}
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].index >= from.Segment })
	if i == len(l.segs) {
		l.mu.Unlock()
		return nil, nil, fmt.Errorf("remote log: cursor %s at missing segment %d", c.name, from.Segment)
	}
	if l.segs[i].index != from.Segment { // a gap: continue with the next segment
		from = Position{Segment: l.segs[i].index}
	}
	for from.Offset >= l.segs[i].size && i < len(l.segs)-1 {
		i++
		from = Position{Segment: l.segs[i].index}
	}
	c.read = from
	if from.Offset >= l.segs[i].size {
		notify := l.notify
		l.mu.Unlock()
		return nil, notify, nil
	}
	l.mu.Unlock()

	samples, n, err := c.readAt(from)
	l.mu.Lock()
	if c.read != from {
		// The bound removed the segment while we read it (or before we
		// could open it) and counted this record as lost: it must not be
		// delivered too.
		l.mu.Unlock()
		return c.Next()
	}
	if err != nil {
		l.mu.Unlock()
		return nil, nil, err
	}
	next := Position{Segment: from.Segment, Offset: from.Offset + n}
	c.read = next
	l.mu.Unlock()
	return &Record{Samples: samples, Next: next, Bytes: n}, nil, nil
}

// readAt reads and decodes the record at from, and its size.
func (c *Cursor) readAt(from Position) ([]Sample, int64, error) {
	if c.file == nil || c.fileIdx != from.Segment {
		if c.file != nil {
			c.file.Close()
			c.file = nil
		}
		f, err := os.Open(c.log.segPath(from.Segment))
		if err != nil {
			return nil, 0, fmt.Errorf("remote log: %w", err)
		}
		c.file, c.fileIdx = f, from.Segment
	}
	payload, n, err := readFrame(c.file, from.Offset)
	if err == nil {
		payload, err = snappy.Decode(nil, payload)
	}
	var samples []Sample
	if err == nil {
		samples, err = decodeRecord(payload)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("remote log: segment %d offset %d: %w", from.Segment, from.Offset, err)
	}
	return samples, n, nil
}

// Position is where the cursor will read next after a restart: past
// every record committed with Commit.
func (c *Cursor) Position() Position {
	c.log.mu.Lock()
	defer c.log.mu.Unlock()
	return c.pos
}

// Commit records that everything before p was delivered (or dropped and
// counted).
func (c *Cursor) Commit(p Position) error {
	l := c.log
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.Segment < c.pos.Segment || p.Segment == c.pos.Segment && p.Offset <= c.pos.Offset {
		return nil // the bound moved it further already
	}
	c.pos = p
	if err := c.save(); err != nil {
		return err
	}
	return l.removeConsumed()
}

// removeConsumed deletes the oldest segments every cursor has committed
// past. Must hold mu.
func (l *Log) removeConsumed() error {
	for len(l.segs) > 1 {
		for _, c := range l.cursors {
			if c.pos.Segment <= l.segs[0].index {
				return nil
			}
		}
		if err := os.Remove(l.segPath(l.segs[0].index)); err != nil {
			return fmt.Errorf("remote log: %w", err)
		}
		l.segs = l.segs[1:]
	}
	return nil
}

// Dropped is how many samples this cursor lost past the bound.
func (c *Cursor) Dropped() uint64 {
	c.log.mu.Lock()
	defer c.log.mu.Unlock()
	return c.dropped
}

// Backlog is how many bytes the cursor is behind, and the time the
// oldest unread record was appended (zero when it is caught up).
func (c *Cursor) Backlog() (bytes int64, oldest time.Time) {
	l := c.log
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		switch {
		case s.index < c.pos.Segment:
		case s.index == c.pos.Segment:
			bytes += s.size - c.pos.Offset
		default:
			bytes += s.size
		}
		if bytes > 0 && oldest.IsZero() {
			oldest = s.newest // a segment's newest record bounds its oldest unread one
		}
	}
	return bytes, oldest
}

// encodeRecord appends the record encoding of samples: per series (in
// order of first appearance) its labels and its samples with
// delta-encoded timestamps.
func encodeRecord(b []byte, samples []Sample) []byte {
	type run struct {
		ls  labels.Labels
		idx []int
	}
	var runs []run
	at := map[string]int{}
	var key []byte
	for i, s := range samples {
		key = s.Labels.Bytes(key[:0])
		j, ok := at[string(key)]
		if !ok {
			j = len(runs)
			at[string(key)] = j
			runs = append(runs, run{ls: s.Labels})
		}
		runs[j].idx = append(runs[j].idx, i)
	}
	b = binary.AppendUvarint(b, uint64(len(runs)))
	for _, r := range runs {
		b = binary.AppendUvarint(b, uint64(r.ls.Len()))
		r.ls.Range(func(l labels.Label) {
			b = binary.AppendUvarint(b, uint64(len(l.Name)))
			b = append(b, l.Name...)
			b = binary.AppendUvarint(b, uint64(len(l.Value)))
			b = append(b, l.Value...)
		})
		b = binary.AppendUvarint(b, uint64(len(r.idx)))
		prev := int64(0)
		for _, i := range r.idx {
			b = binary.AppendVarint(b, samples[i].T-prev)
			prev = samples[i].T
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(samples[i].V))
		}
	}
	return b
}

func decodeRecord(b []byte) ([]Sample, error) {
	errShort := errors.New("truncated record")
	uv := func() (uint64, error) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, errShort
		}
		b = b[n:]
		return v, nil
	}
	str := func() (string, error) {
		n, err := uv()
		if err != nil || uint64(len(b)) < n {
			return "", errShort
		}
		s := string(b[:n])
		b = b[n:]
		return s, nil
	}
	nseries, err := uv()
	if err != nil {
		return nil, err
	}
	var out []Sample
	builder := labels.NewScratchBuilder(16)
	for range nseries {
		nl, err := uv()
		if err != nil {
			return nil, err
		}
		builder.Reset()
		for range nl {
			name, err := str()
			if err != nil {
				return nil, err
			}
			val, err := str()
			if err != nil {
				return nil, err
			}
			builder.Add(name, val)
		}
		ls := builder.Labels()
		ns, err := uv()
		if err != nil {
			return nil, err
		}
		prev := int64(0)
		for range ns {
			d, n := binary.Varint(b)
			if n <= 0 || len(b[n:]) < 8 {
				return nil, errShort
			}
			prev += d
			v := math.Float64frombits(binary.LittleEndian.Uint64(b[n:]))
			b = b[n+8:]
			out = append(out, Sample{Labels: ls, T: prev, V: v})
		}
	}
	if len(b) != 0 {
		return nil, errors.New("trailing bytes in record")
	}
	return out, nil
}
