package root

import (
	"context"
	"fmt"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/canopytree/canopy/root/remote"
)

// remoteTee is the root's storage as the ingester and the finaliser see
// it: every sample the TSDB accepts in a commit is also appended, as one
// record, to the remote-write log before the commit completes, so what
// the root acknowledges to the tree is in both write-ahead logs.
type remoteTee struct {
	db  storage.Appendable
	log *remote.Log
}

func (t remoteTee) Appender(ctx context.Context) storage.Appender {
	return &teeAppender{Appender: t.db.Appender(ctx), log: t.log}
}

type teeAppender struct {
	storage.Appender
	log     *remote.Log
	samples []remote.Sample
}

func (a *teeAppender) Append(ref storage.SeriesRef, ls labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	r, err := a.Appender.Append(ref, ls, t, v)
	if err == nil {
		a.samples = append(a.samples, remote.Sample{Labels: ls, T: t, V: v})
	}
	return r, err
}

// Commit writes the remote-write record first: if the TSDB commit then
// fails, the child sends the batch again and a sink gets identical
// samples twice, which sinks accept; the other order could lose them.
func (a *teeAppender) Commit() error {
	if err := a.log.Append(a.samples); err != nil {
		_ = a.Appender.Rollback()
		return fmt.Errorf("remote-write log: %w", err)
	}
	return a.Appender.Commit()
}

func (a *teeAppender) Rollback() error {
	a.samples = a.samples[:0]
	return a.Appender.Rollback()
}
