package batch

import (
	"fmt"
	"unicode/utf8"

	"github.com/prometheus/common/model"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// ValidateLabels checks a wire label set: a valid metric name, valid and
// unique label names (classic Prometheus charset, so every sink and the
// OpenMetrics 1.0 text format can carry them), UTF-8 values, no empty values,
// and the size limits.
func ValidateLabels(ls []*canopyv1.Label, lim DecodeLimits) error {
	if lim.MaxLabelsPerSet > 0 && len(ls) > lim.MaxLabelsPerSet {
		return fmt.Errorf("%d labels, limit is %d", len(ls), lim.MaxLabelsPerSet)
	}
	seen := make(map[string]struct{}, len(ls))
	hasName := false
	for _, l := range ls {
		if lim.MaxLabelNameLen > 0 && len(l.Name) > lim.MaxLabelNameLen {
			return fmt.Errorf("label name %.40q… is %d bytes, limit is %d", l.Name, len(l.Name), lim.MaxLabelNameLen)
		}
		if lim.MaxLabelValueLen > 0 && len(l.Value) > lim.MaxLabelValueLen {
			return fmt.Errorf("label %q value is %d bytes, limit is %d", l.Name, len(l.Value), lim.MaxLabelValueLen)
		}
		if _, dup := seen[l.Name]; dup {
			return fmt.Errorf("duplicate label name %q", l.Name)
		}
		seen[l.Name] = struct{}{}
		if l.Name == model.MetricNameLabel {
			hasName = true
			if !model.IsValidLegacyMetricName(l.Value) {
				return fmt.Errorf("invalid metric name %q", l.Value)
			}
			continue
		}
		if !model.LabelName(l.Name).IsValidLegacy() {
			return fmt.Errorf("invalid label name %q", l.Name)
		}
		if l.Value == "" {
			return fmt.Errorf("label %q has an empty value", l.Name)
		}
		if !utf8.ValidString(l.Value) {
			return fmt.Errorf("label %q value is not valid UTF-8", l.Name)
		}
	}
	if !hasName {
		return fmt.Errorf("no metric name (%s label)", model.MetricNameLabel)
	}
	return nil
}
