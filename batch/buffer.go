package batch

import (
	"time"
)

// Delivery selects what a node does with a batch once its parent took it.
type Delivery int

const (
	// AtLeastOnce keeps a batch until the root's acknowledgement covers it.
	AtLeastOnce Delivery = iota
	// AtMostOnce forgets a batch as soon as the parent accepted it.
	AtMostOnce
)

// Limits bound what a Buffer retains. Zero means unbounded.
type Limits struct {
	MaxSamples int
	MaxBytes   int
}

// Loss counts what a Buffer dropped on overflow.
type Loss struct {
	Batches uint64
	Samples uint64
}

type entry struct {
	batch   Batch
	samples int
	bytes   int
	// sentPath is the path instance the batch was last handed to (0: never
	// handed over), sentAt when.
	sentPath uint64
	sentAt   time.Time
}

// Buffer numbers a node's batches and retains them until they are
// acknowledged. When it is over its limits it drops the oldest batches and
// counts the loss. It is not safe for concurrent use.
type Buffer struct {
	origin   string
	epoch    uint64
	nextSeq  uint64
	delivery Delivery
	limits   Limits
	entries  []*entry // ascending seq
	samples  int
	bytes    int
	loss     Loss
}

// NewBuffer returns a buffer for batches of (origin, epoch).
func NewBuffer(origin string, epoch uint64, delivery Delivery, limits Limits) *Buffer {
	return &Buffer{origin: origin, epoch: epoch, nextSeq: 1, delivery: delivery, limits: limits}
}

// Seal numbers the series of a finished window as the next batch and
// retains it, dropping the oldest batches if the buffer is over its limits.
// An empty window still produces a batch: its seq proves the window passed.
func (b *Buffer) Seal(series []Series) ID {
	e := &entry{batch: Batch{ID: ID{Origin: b.origin, Epoch: b.epoch, Seq: b.nextSeq}, Series: series}}
	b.nextSeq++
	e.samples = e.batch.NumSamples()
	e.bytes = e.batch.SizeBytes()
	b.entries = append(b.entries, e)
	b.samples += e.samples
	b.bytes += e.bytes
	for len(b.entries) > 1 && b.over() {
		b.loss.Batches++
		b.loss.Samples += uint64(b.entries[0].samples)
		b.remove(1)
	}
	return e.batch.ID
}

func (b *Buffer) over() bool {
	return (b.limits.MaxSamples > 0 && b.samples > b.limits.MaxSamples) ||
		(b.limits.MaxBytes > 0 && b.bytes > b.limits.MaxBytes)
}

func (b *Buffer) remove(n int) {
	for _, e := range b.entries[:n] {
		b.samples -= e.samples
		b.bytes -= e.bytes
	}
	clear(b.entries[:n])
	b.entries = b.entries[n:]
}

// Ack releases every batch of the buffer's epoch with seq ≤ seq. Acks for
// another epoch are ignored: they belong to an earlier incarnation.
func (b *Buffer) Ack(epoch, seq uint64) {
	if epoch != b.epoch {
		return
	}
	n := 0
	for n < len(b.entries) && b.entries[n].batch.Seq <= seq {
		n++
	}
	b.remove(n)
}

// Discard removes the batch with the given seq without acknowledgement
// (the parent rejected it as invalid) and returns how many samples it held.
func (b *Buffer) Discard(seq uint64) int {
	for i, e := range b.entries {
		if e.batch.Seq == seq {
			b.samples -= e.samples
			b.bytes -= e.bytes
			b.entries = append(b.entries[:i], b.entries[i+1:]...)
			return e.samples
		}
	}
	return 0
}

// LowSeq is the lowest seq still retained, or the next seq when empty.
func (b *Buffer) LowSeq() uint64 {
	if len(b.entries) == 0 {
		return b.nextSeq
	}
	return b.entries[0].batch.Seq
}

// Due returns up to max batches that must go to the parent now: batches
// never handed over, batches handed to a different path instance (something
// above restarted and may have lost them), and batches unacknowledged for
// longer than retransmitAfter. The returned batches carry LowSeq.
func (b *Buffer) Due(path uint64, now time.Time, retransmitAfter time.Duration, max int) []*Batch {
	var out []*Batch
	low := b.LowSeq()
	for _, e := range b.entries {
		if len(out) == max {
			break
		}
		if e.sentPath != 0 && e.sentPath == path && now.Sub(e.sentAt) < retransmitAfter {
			continue
		}
		e.batch.LowSeq = low
		out = append(out, &e.batch)
	}
	return out
}

// Sent records that the parent accepted the given batches, answering with
// path instance path. Under AtMostOnce they are forgotten.
func (b *Buffer) Sent(ids []ID, path uint64, now time.Time) {
	if b.delivery == AtMostOnce {
		// Batches are sent oldest first, so the accepted ones are a prefix.
		if len(ids) > 0 {
			b.Ack(b.epoch, ids[len(ids)-1].Seq)
		}
		return
	}
	i := 0
	for _, id := range ids {
		for i < len(b.entries) && b.entries[i].batch.Seq < id.Seq {
			i++
		}
		if i < len(b.entries) && b.entries[i].batch.Seq == id.Seq {
			b.entries[i].sentPath = path
			b.entries[i].sentAt = now
		}
	}
}

// Len is the number of retained batches.
func (b *Buffer) Len() int { return len(b.entries) }

// Retained is the number of retained samples and their estimated bytes.
func (b *Buffer) Retained() (samples, bytes int) { return b.samples, b.bytes }

// Loss is what overflow has dropped since the buffer was created.
func (b *Buffer) Loss() Loss { return b.loss }

// Epoch is the incarnation the buffer numbers batches in.
func (b *Buffer) Epoch() uint64 { return b.epoch }

// NextSeq is the seq the next sealed batch will get.
func (b *Buffer) NextSeq() uint64 { return b.nextSeq }
