package keys

import (
	"context"
	"fmt"
	"time"
)

// ErrTooManyTags is a change that would leave a key more than MaxTags
// tags; it is an ErrInvalidArgument.
var ErrTooManyTags = fmt.Errorf("too many tags: %w", ErrInvalidArgument)

// ChangeTags adds the tags of set (replacing the values of tags the key
// has) and removes the tag keys of remove, in one compare-and-swap write
// of the key's record: the change is applied to the record as stored, so
// concurrent changes of other tags are all kept (a read in the caller and
// a whole write, as Update takes, would lose all but the last). The key
// may end with at most MaxTags tags; removing a tag it lacks is no error.
func (s *Service) ChangeTags(ctx context.Context, ref string, set map[string]string, remove []string) (Key, error) {
	if err := checkTags(set); err != nil {
		return Key{}, err
	}
	for _, n := range remove {
		if n == "" || len(n) > 128 {
			return Key{}, fmt.Errorf("%w: tag key %q: keys are 1..128 bytes", ErrInvalidArgument, n)
		}
	}
	return s.update(ctx, ref, func(r *record, _ time.Time) error {
		if err := notDeleted(r); err != nil {
			return err
		}
		if len(set) > 0 && r.Tags == nil {
			r.Tags = make(map[string]string, len(set))
		}
		for n, v := range set {
			r.Tags[n] = v
		}
		for _, n := range remove {
			delete(r.Tags, n)
		}
		if len(r.Tags) > MaxTags {
			return fmt.Errorf("%w: key %s would have %d tags; at most %d are allowed", ErrTooManyTags, r.ID, len(r.Tags), MaxTags)
		}
		if len(r.Tags) == 0 {
			r.Tags = nil
		}
		return nil
	})
}
