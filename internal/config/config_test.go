package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

type testConfig struct {
	Server struct {
		Listen string        `mapstructure:"listen"`
		Window time.Duration `mapstructure:"window"`
	} `mapstructure:"server"`
	Tags []string `mapstructure:"tags"`
	Log  Log      `mapstructure:"log"`
}

func defaults() testConfig {
	var c testConfig
	c.Server.Listen = "127.0.0.1:1"
	c.Server.Window = 5 * time.Second
	c.Log = DefaultLog()
	return c
}

func write(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	file := write(t, "server:\n  listen: 127.0.0.1:2\n  window: 10s\n")
	t.Setenv("CANOPY_SERVER_WINDOW", "7s")
	flags := pflag.NewFlagSet("x", pflag.ContinueOnError)
	flags.String("listen", "", "")
	if err := flags.Parse([]string{"--listen", "127.0.0.1:3"}); err != nil {
		t.Fatal(err)
	}
	c := defaults()
	if err := Load(&c, file, flags, map[string]string{"listen": "server.listen"}); err != nil {
		t.Fatal(err)
	}
	if c.Server.Listen != "127.0.0.1:3" || c.Server.Window != 7*time.Second || c.Log.Level != "info" {
		t.Fatalf("flag > env > file > default violated: %+v", c)
	}
}

func TestDefaultsSurviveWithoutFile(t *testing.T) {
	c := defaults()
	if err := Load(&c, "", pflag.NewFlagSet("x", pflag.ContinueOnError), nil); err != nil {
		t.Fatal(err)
	}
	want := defaults()
	if c.Server != want.Server || c.Log != want.Log || len(c.Tags) != 0 {
		t.Fatalf("defaults changed: %+v", c)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	cases := map[string]struct {
		file, env, want string
	}{
		"unknown key":          {file: "server:\n  listne: x\n", want: "server.listne"},
		"unknown section":      {file: "servr:\n  listen: x\n", want: "servr"},
		"bad duration":         {file: "server:\n  window: soon\n", want: "window"},
		"unknown env key":      {env: "CANOPY_SERVER_LISTNE=x", want: "CANOPY_SERVER_LISTNE"},
		"env of other tool ok": {env: "CANOPY_ROOT=127.0.0.1:1", want: ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			file := ""
			if tc.file != "" {
				file = write(t, tc.file)
			}
			if tc.env != "" {
				k, v, _ := strings.Cut(tc.env, "=")
				t.Setenv(k, v)
			}
			c := defaults()
			err := Load(&c, file, pflag.NewFlagSet("x", pflag.ContinueOnError), nil)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not name %q", err, tc.want)
			}
		})
	}
}

func TestLogAndLimitsValidation(t *testing.T) {
	if _, err := (Log{Level: "loud", Format: "text"}).Logger(); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("bad level: %v", err)
	}
	if _, err := (Log{Level: "info", Format: "xml"}).Logger(); err == nil || !strings.Contains(err.Error(), "log.format") {
		t.Fatalf("bad format: %v", err)
	}
	l := DefaultLimits()
	l.MaxSamples = 0
	if err := l.Validate("limits"); err == nil || !strings.Contains(err.Error(), "limits.max_samples") {
		t.Fatalf("limits: %v", err)
	}
}
