package leaf

import (
	"fmt"
	"net/url"

	"github.com/prometheus/common/model"
)

// Level is what a target's metrics describe (c12s paper, section III).
type Level string

// The three collection levels.
const (
	LevelMachine   Level = "machine"
	LevelContainer Level = "container"
	LevelApp       Level = "app"
)

// Target is one HTTP endpoint to scrape.
type Target struct {
	// Name identifies the target on this node; it becomes the job label.
	Name string `mapstructure:"name" json:"name"`
	// URL of the metrics endpoint, e.g. http://127.0.0.1:9100/metrics.
	URL string `mapstructure:"url" json:"url"`
	// Level of the metrics: machine (default), container or app.
	Level Level `mapstructure:"level" json:"level,omitempty"`
	// App is the application id set as the app label (app targets).
	App string `mapstructure:"app" json:"app,omitempty"`
	// ContainerLabel names the scraped label whose value becomes the
	// container label (cAdvisor uses "name"); container targets only.
	ContainerLabel string `mapstructure:"container_label" json:"container_label,omitempty"`
}

// Validate reports the first problem with the target, naming the field.
func (t *Target) Validate() error {
	if t.Name == "" {
		return fmt.Errorf("name: must not be empty")
	}
	if !model.LabelValue(t.Name).IsValid() {
		return fmt.Errorf("name: %q is not valid UTF-8", t.Name)
	}
	u, err := url.Parse(t.URL)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url: %q must be http or https", t.URL)
	}
	if u.Host == "" {
		return fmt.Errorf("url: %q has no host", t.URL)
	}
	switch t.Level {
	case "":
		t.Level = LevelMachine
	case LevelMachine, LevelContainer, LevelApp:
	default:
		return fmt.Errorf("level: %q is not one of machine, container, app", t.Level)
	}
	if t.App != "" && t.Level != LevelApp {
		return fmt.Errorf("app: only app-level targets carry an app id")
	}
	if t.Level == LevelApp && t.App == "" {
		t.App = t.Name
	}
	if t.ContainerLabel != "" {
		if t.Level != LevelContainer {
			return fmt.Errorf("container_label: only container-level targets name a container label")
		}
		if !model.LabelName(t.ContainerLabel).IsValidLegacy() {
			return fmt.Errorf("container_label: %q is not a valid label name", t.ContainerLabel)
		}
	}
	return nil
}
