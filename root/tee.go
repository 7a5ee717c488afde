package root

import (
	"context"
	"fmt"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/root/remote"
)

// tee is the root's storage as the ingester and the finaliser see it:
// every sample the TSDB accepts in a commit is also appended, as one
// record, to the remote-write log (when there is one) before the commit
// completes, so what the root acknowledges to the tree is in both
// write-ahead logs; after the commit the samples go to the stream's
// subscribers (when anyone listens).
type tee struct {
	db      storage.Appendable
	log     *remote.Log
	publish func([]batch.LabeledSample)
	active  func() bool
}

func (t tee) Appender(ctx context.Context) storage.Appender {
	return &teeAppender{Appender: t.db.Appender(ctx), t: t, collect: t.log != nil || t.active()}
}

type teeAppender struct {
	storage.Appender
	t       tee
	collect bool
	samples []batch.LabeledSample
}

func (a *teeAppender) Append(ref storage.SeriesRef, ls labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	r, err := a.Appender.Append(ref, ls, t, v)
	if err == nil && a.collect {
		a.samples = append(a.samples, batch.LabeledSample{Labels: ls, T: t, V: v})
	}
	return r, err
}

// Commit writes the remote-write record first: if the TSDB commit then
// fails, the child sends the batch again and a sink gets identical
// samples twice, which sinks accept; the other order could lose them.
func (a *teeAppender) Commit() error {
	if a.t.log != nil {
		if err := a.t.log.Append(a.samples); err != nil {
			_ = a.Appender.Rollback()
			return fmt.Errorf("remote-write log: %w", err)
		}
	}
	if err := a.Appender.Commit(); err != nil {
		return err
	}
	if a.t.publish != nil && len(a.samples) > 0 {
		a.t.publish(a.samples)
	}
	return nil
}

func (a *teeAppender) Rollback() error {
	a.samples = a.samples[:0]
	return a.Appender.Rollback()
}
