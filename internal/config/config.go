// Package config loads a binary's configuration with viper: defaults taken
// from the binary's default Config value, then a YAML file, then CANOPY_…
// environment variables, then command-line flags. Unknown keys are errors
// that name the key. It also holds the small config sections several
// binaries share.
package config

import (
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/canopytree/canopy/batch"
)

// EnvPrefix prefixes environment overrides: node.id is CANOPY_NODE_ID.
const EnvPrefix = "CANOPY"

// Load fills out (a pointer to a struct already holding the defaults) from
// file (optional), the environment and the flags that were set. flagKeys
// maps flag names to config keys.
func Load(out any, file string, flags *pflag.FlagSet, flagKeys map[string]string) error {
	v := viper.New()
	v.SetConfigType("yaml")
	maps := map[string]bool{} // keys whose value is a map: any sub-key is valid
	setDefaults(v, "", reflect.ValueOf(out).Elem(), maps)
	known := map[string]bool{}
	for _, k := range v.AllKeys() {
		known[k] = true
	}
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("read config %s: %w", file, err)
		}
		for _, k := range v.AllKeys() {
			if !known[k] && !underMap(k, maps) {
				return fmt.Errorf("config %s: unknown key %s", file, k)
			}
		}
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if err := checkEnv(v); err != nil {
		return err
	}
	for name, key := range flagKeys {
		f := flags.Lookup(name)
		if f == nil {
			return fmt.Errorf("flag --%s is not defined", name)
		}
		if err := v.BindPFlag(key, f); err != nil {
			return err
		}
	}
	err := v.UnmarshalExact(out, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)))
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// checkEnv rejects variables under a section's prefix (CANOPY_NODE_…) that
// match no key: a typo in an override must not be silently ignored. Other
// CANOPY_ variables (another tool's, like canopyctl's CANOPY_ROOT) pass.
func checkEnv(v *viper.Viper) error {
	known := map[string]bool{}
	var sections []string
	for _, k := range v.AllKeys() {
		known[envName(k)] = true
		section, _, _ := strings.Cut(k, ".")
		sections = append(sections, envName(section)+"_")
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if known[name] {
			continue
		}
		for _, prefix := range sections {
			if strings.HasPrefix(name, prefix) {
				return fmt.Errorf("config: environment variable %s matches no configuration key", name)
			}
		}
	}
	return nil
}

func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func underMap(key string, maps map[string]bool) bool {
	for i := strings.LastIndexByte(key, '.'); i > 0; i = strings.LastIndexByte(key[:i], '.') {
		if maps[key[:i]] {
			return true
		}
	}
	return false
}

// setDefaults registers every leaf field of the defaults struct, so that
// environment overrides apply to keys the file does not mention, and
// notes the map-valued keys.
func setDefaults(v *viper.Viper, prefix string, val reflect.Value, maps map[string]bool) {
	t := val.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("mapstructure"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		fv := val.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeFor[time.Duration]() {
			setDefaults(v, key+".", fv, maps)
			continue
		}
		if fv.Kind() == reflect.Map {
			maps[key] = true
		}
		v.SetDefault(key, fv.Interface())
	}
}

// Log configures structured logging.
type Log struct {
	// Level: debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format: text or json.
	Format string `mapstructure:"format"`
}

// DefaultLog logs at info level as text.
func DefaultLog() Log { return Log{Level: "info", Format: "text"} }

// Logger builds the slog logger the section describes.
func (l Log) Logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %q is not debug, info, warn or error", l.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log.format: %q is not text or json", l.Format)
}

// Limits bound what a parent accepts in one child heartbeat.
type Limits struct {
	// MaxMessageBytes is the largest heartbeat accepted, after
	// decompression.
	MaxMessageBytes int `mapstructure:"max_message_bytes"`
	// MaxSeries and MaxSamples bound one heartbeat's content.
	MaxSeries  int `mapstructure:"max_series"`
	MaxSamples int `mapstructure:"max_samples"`
	// MaxLabels bounds the labels of one series.
	MaxLabels int `mapstructure:"max_labels"`
	// MaxLabelNameBytes and MaxLabelValueBytes bound one label.
	MaxLabelNameBytes  int `mapstructure:"max_label_name_bytes"`
	MaxLabelValueBytes int `mapstructure:"max_label_value_bytes"`
	// MaxDictionary bounds the series dictionary kept per child session.
	MaxDictionary int `mapstructure:"max_dictionary"`
}

// DefaultLimits fit a supernode with 100 children of node_exporter size
// catching up after an outage, and stop anything absurd.
func DefaultLimits() Limits {
	return Limits{
		MaxMessageBytes:    16 << 20,
		MaxSeries:          500_000,
		MaxSamples:         2_000_000,
		MaxLabels:          64,
		MaxLabelNameBytes:  128,
		MaxLabelValueBytes: 2048,
		MaxDictionary:      2_000_000,
	}
}

// Validate names the first bad key under section.
func (l Limits) Validate(section string) error {
	for _, f := range []struct {
		key string
		v   int
	}{
		{"max_message_bytes", l.MaxMessageBytes}, {"max_series", l.MaxSeries}, {"max_samples", l.MaxSamples},
		{"max_labels", l.MaxLabels}, {"max_label_name_bytes", l.MaxLabelNameBytes},
		{"max_label_value_bytes", l.MaxLabelValueBytes}, {"max_dictionary", l.MaxDictionary},
	} {
		if f.v <= 0 {
			return fmt.Errorf("%s.%s: must be positive, got %d", section, f.key, f.v)
		}
	}
	return nil
}

// Decode converts the limits for the batch decoder.
func (l Limits) Decode() batch.DecodeLimits {
	return batch.DecodeLimits{
		MaxSeries: l.MaxSeries, MaxSamples: l.MaxSamples, MaxLabelsPerSet: l.MaxLabels,
		MaxLabelNameLen: l.MaxLabelNameBytes, MaxLabelValueLen: l.MaxLabelValueBytes,
		MaxDictionarySize: l.MaxDictionary,
	}
}
