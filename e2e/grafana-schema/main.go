// Command grafana-schema checks a Grafana dashboard JSON against Grafana's own schema, as
// the Grafana Foundation SDK (github.com/grafana/grafana-foundation-sdk/go, Apache-2.0)
// generates it from Grafana's CUE kinds: the dashboard is decoded with the SDK's strict
// decoder (unknown or misspelled fields, wrong types and missing required fields are
// errors, in the dashboard, its variables, every panel's options and field config for its
// panel type, and every Prometheus query), then the SDK's Validate runs. On top of that,
// every panel but a row has a panel type the SDK knows, a datasource and at least one
// target, and every target is a Prometheus query with a non-empty expr.
//
// Reads the file named by its argument; prints a one-line summary; exits 1 naming the
// panel on any violation. Run by `e2e/promtool.sh schema`.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: grafana-schema DASHBOARD.json")
		os.Exit(2)
	}
	path := os.Args[1]
	raw, err := os.ReadFile(path)
	if err != nil {
		fail(path, err.Error())
	}
	summary, problems := check(raw)
	if len(problems) > 0 {
		fail(path, strings.Join(problems, "\n  "))
	}
	fmt.Printf("Checking %s\n  SUCCESS: %s\n", path, summary)
}

func fail(path, message string) {
	fmt.Fprintf(os.Stderr, "Checking %s\n  FAILED: %s\n", path, message)
	os.Exit(1)
}

// check decodes the dashboard strictly and checks its panels; returns a summary and the
// problems found (none: the dashboard is valid).
func check(raw []byte) (string, []string) {
	// The panel types' options and field configs and the datasources' queries are decoded
	// by the variants registered here.
	plugins.RegisterDefaultPlugins()
	var board dashboard.Dashboard
	if err := failure(board.UnmarshalJSONStrict(raw)); err != nil {
		return "", []string{"not a Grafana dashboard (strict decode):\n  " + named(indent(err), raw)}
	}
	if err := failure(board.Validate()); err != nil {
		return "", []string{"Grafana's schema constraints:\n  " + indent(err)}
	}
	// The SDK's PanelOrRowPanel drops a panel that decoded without error (see failure), so
	// the panels are decoded again, one by one, with the same strict decoders. (Errors are
	// never lost: a non-empty list of them is reported above.)
	decoded, err := strictPanels(raw)
	if err != nil {
		return "", []string{err.Error()}
	}
	var problems []string
	panels, queries, variables := 0, 0, 0
	if board.Templating.List != nil {
		variables = len(board.Templating.List)
	}
	for _, d := range decoded {
		n, errs := checkPanel(d.panel, d.raw)
		panels, queries, problems = panels+1, queries+n, append(problems, errs...)
	}
	if panels == 0 {
		problems = append(problems, "no panels")
	}
	title := ""
	if board.Title != nil {
		title = *board.Title
	}
	summary := fmt.Sprintf("dashboard %q: %d panels, %d queries, %d variables match Grafana's schema (foundation SDK)",
		title, panels, queries, variables)
	return summary, problems
}

// checkPanel returns the number of queries of a (non-row) panel and its problems, each
// naming the panel.
func checkPanel(panel dashboard.Panel, rawPanel json.RawMessage) (int, []string) {
	name := fmt.Sprintf("panel %q (type %q)", deref(panel.Title), panel.Type)
	if panel.Id != nil {
		name = fmt.Sprintf("panel %d %q (type %q)", *panel.Id, deref(panel.Title), panel.Type)
	}
	var problems []string
	if _, known := cog.ConfigForPanelcfgVariant(panel.Type); !known {
		problems = append(problems, name+": a panel type the SDK does not know")
	}
	if panel.Datasource == nil || panel.Datasource.Type == nil || *panel.Datasource.Type != "prometheus" || panel.Datasource.Uid == nil {
		problems = append(problems, name+": no Prometheus datasource (type and uid)")
	}
	var raw struct {
		Targets []json.RawMessage `json:"targets"`
	}
	if err := json.Unmarshal(rawPanel, &raw); err != nil || len(raw.Targets) == 0 {
		problems = append(problems, name+": no targets")
	}
	for i, target := range raw.Targets {
		// The SDK's Panel decoder drops the targets it decoded without error (see
		// failure): each is decoded again, as the Prometheus query it must be.
		var query prometheus.Dataquery
		if err := failure(query.UnmarshalJSONStrict(target)); err != nil {
			problems = append(problems, fmt.Sprintf("%s: target %d is not a Prometheus query: %s", name, i, indent(err)))
			continue
		}
		if strings.TrimSpace(query.Expr) == "" {
			problems = append(problems, fmt.Sprintf("%s: target %d has no expr", name, i))
		}
		if query.RefId == nil || *query.RefId == "" {
			problems = append(problems, fmt.Sprintf("%s: target %d has no refId", name, i))
		}
		if query.Datasource == nil || query.Datasource.Type == nil || *query.Datasource.Type != "prometheus" {
			problems = append(problems, fmt.Sprintf("%s: target %d has no Prometheus datasource", name, i))
		}
	}
	return len(raw.Targets), problems
}

// decodedPanel is a panel as the SDK decoded it, with its JSON.
type decodedPanel struct {
	panel dashboard.Panel
	raw   json.RawMessage
}

// strictPanels decodes every panel of the dashboard, and those of its rows, strictly.
func strictPanels(raw []byte) ([]decodedPanel, error) {
	var top struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, err
	}
	var panels []decodedPanel
	for i, item := range top.Panels {
		var kind struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(item, &kind); err != nil {
			return nil, fmt.Errorf("panels[%d]: %w", i, err)
		}
		if kind.Type == "row" {
			var row dashboard.RowPanel
			if err := failure(row.UnmarshalJSONStrict(item)); err != nil {
				return nil, fmt.Errorf("panels[%d] (row): %w", i, err)
			}
			var inner struct {
				Panels []json.RawMessage `json:"panels"`
			}
			if err := json.Unmarshal(item, &inner); err != nil {
				return nil, fmt.Errorf("panels[%d] (row): %w", i, err)
			}
			for j, nested := range inner.Panels {
				var panel dashboard.Panel
				if err := failure(panel.UnmarshalJSONStrict(nested)); err != nil {
					return nil, fmt.Errorf("panels[%d].panels[%d]: %w", i, j, err)
				}
				panels = append(panels, decodedPanel{panel, nested})
			}
			continue
		}
		var panel dashboard.Panel
		if err := failure(panel.UnmarshalJSONStrict(item)); err != nil {
			return nil, fmt.Errorf("panels[%d]: %w", i, err)
		}
		panels = append(panels, decodedPanel{panel, item})
	}
	return panels, nil
}

// failure is err unless it is an empty list of build errors: the SDK's generated code
// returns its (nil) error list as an error even when it holds none.
func failure(err error) error {
	var list cog.BuildErrors
	if errors.As(err, &list) && len(list) == 0 {
		return nil
	}
	return err
}

// named puts each panel's title after its index in the SDK's error paths: `panels[3]`
// becomes `panels[3] "Title"`.
func named(text string, raw []byte) string {
	var top struct {
		Panels []struct {
			Title string `json:"title"`
		} `json:"panels"`
	}
	if json.Unmarshal(raw, &top) != nil {
		return text
	}
	for i := len(top.Panels) - 1; i >= 0; i-- {
		index := fmt.Sprintf("panels[%d]", i)
		text = strings.ReplaceAll(text, index+".", fmt.Sprintf("%s %q: ", index, top.Panels[i].Title))
	}
	return text
}

func indent(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "\n  ")
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
