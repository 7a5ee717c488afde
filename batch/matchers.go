package batch

import (
	"fmt"

	"github.com/prometheus/prometheus/model/labels"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// MatchersFromProto compiles label matchers pushed down the tree (filter
// and aggregation rules). Regular expressions are anchored, as in PromQL.
func MatchersFromProto(ms []*canopyv1.LabelMatcher) ([]*labels.Matcher, error) {
	out := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		var t labels.MatchType
		switch m.Type {
		case canopyv1.MatchType_MATCH_TYPE_EQUAL:
			t = labels.MatchEqual
		case canopyv1.MatchType_MATCH_TYPE_NOT_EQUAL:
			t = labels.MatchNotEqual
		case canopyv1.MatchType_MATCH_TYPE_REGEX:
			t = labels.MatchRegexp
		case canopyv1.MatchType_MATCH_TYPE_NOT_REGEX:
			t = labels.MatchNotRegexp
		default:
			return nil, fmt.Errorf("matcher on %q: unknown match type %v", m.Name, m.Type)
		}
		lm, err := labels.NewMatcher(t, m.Name, m.Value)
		if err != nil {
			return nil, fmt.Errorf("matcher on %q: %w", m.Name, err)
		}
		out = append(out, lm)
	}
	return out, nil
}

// Matches reports whether ls satisfies every matcher.
func Matches(ms []*labels.Matcher, ls labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}
