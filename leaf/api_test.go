package leaf

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/canopytree/canopy/batch"
)

// TestTargetsAtRunTime: a scheduler registers an application through the
// local API, it is scraped with the app label, and removed again.
func TestTargetsAtRunTime(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "# TYPE orders_total counter\norders_total 12\n")
	}))
	defer app.Close()
	a, err := NewAgent(AgentConfig{
		Identity: Identity{Node: "n1", DC: "eu-1"}, ScrapeInterval: time.Second, ScrapeTimeout: time.Second,
		Window: time.Second, Epoch: 1, Buffer: batch.Limits{MaxSamples: 1000},
	}, nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(a.APIHandler())
	defer api.Close()

	post := func(body string) (int, string) {
		resp, err := http.Post(api.URL+"/api/v1/targets", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	target := `{"name":"shop","url":"` + app.URL + `/metrics","level":"app","app":"shop-v2"}`
	if code, body := post(target); code != http.StatusCreated {
		t.Fatalf("add: %d %s", code, body)
	}
	if code, _ := post(target); code != http.StatusConflict {
		t.Fatalf("duplicate add: %d", code)
	}
	for bad, want := range map[string]string{
		`{"name":"x","url":"ftp://h/m"}`:                 "url",
		`{"name":"x","url":"http://h/m","level":"vm"}`:   "level",
		`{"name":"x","url":"http://h/m","colour":"red"}`: "unknown field",
		`{"url":"http://h/m"}`:                           "name",
	} {
		if code, body := post(bad); code != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s, want 400 naming %q", bad, code, body, want)
		}
	}

	resp, err := http.Get(api.URL + "/api/v1/targets")
	if err != nil {
		t.Fatal(err)
	}
	var listed []Target
	json.NewDecoder(resp.Body).Decode(&listed)
	resp.Body.Close()
	if len(listed) != 1 || listed[0].Name != "shop" || listed[0].App != "shop-v2" {
		t.Fatalf("listed %+v", listed)
	}

	a.ScrapeOnce(context.Background())
	var sealed []batch.Series
	a.Observe(func(_ batch.ID, s []batch.Series) { sealed = s })
	_, _ = a.Heartbeat(context.Background(), nil)
	found := false
	for _, s := range sealed {
		if s.Labels.Get("__name__") == "orders_total" {
			found = s.Labels.Get("app") == "shop-v2" && s.Labels.Get("level") == "app"
		}
	}
	if !found {
		t.Fatalf("registered app not scraped with its labels: %v", sealed)
	}

	req, _ := http.NewRequest(http.MethodDelete, api.URL+"/api/v1/targets/shop", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %v %v", resp.StatusCode, err)
	}
	resp, _ = http.DefaultClient.Do(req)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("second delete: %d", resp.StatusCode)
	}
	if len(a.Targets()) != 0 {
		t.Fatal("target not removed")
	}
}
