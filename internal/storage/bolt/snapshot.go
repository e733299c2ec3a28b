package bolt

import (
	"context"

	"go.etcd.io/bbolt"

	"github.com/cofferkms/coffer/internal/storage"
)

var _ storage.Snapshotter = (*Backend)(nil)

// Snapshot calls fn with a view of every entry in one bbolt read
// transaction, so the view is consistent: writes committed meanwhile are
// not in it. The transaction stays open while fn runs; a long one delays
// writes that need the file to grow (bbolt remaps it only between
// transactions), so fn should not wait on anything slow, such as a network
// peer: spool the view to a local file first.
func (b *Backend) Snapshot(ctx context.Context, fn func(storage.View) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error // fn's own error, returned as it is
	err := b.db.View(func(tx *bbolt.Tx) error {
		rev, err := lastRevision(tx.Bucket(metaBucket))
		if err != nil {
			return err
		}
		data := tx.Bucket(dataBucket)
		var count int64
		c := data.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			count++
		}
		entries := func(yield func(storage.Entry, error) bool) {
			c := data.Cursor()
			var n int
			for k, raw := c.First(); k != nil; k, raw = c.Next() {
				if n++; n%1024 == 0 {
					if err := ctx.Err(); err != nil {
						yield(storage.Entry{}, err)
						return
					}
				}
				key := string(k)
				r, value, err := decode(key, raw)
				if err != nil {
					yield(storage.Entry{}, err)
					return
				}
				// raw points into the memory map, valid only in the
				// transaction: the caller gets a copy.
				if !yield(storage.Entry{Key: key, Value: append([]byte{}, value...), Revision: r}, nil) {
					return
				}
			}
		}
		fnErr = fn(storage.View{Backend: "bbolt", Revision: rev, Count: count, Entries: entries})
		return fnErr
	})
	if err != nil && err == fnErr {
		return err
	}
	return b.wrap(err)
}
