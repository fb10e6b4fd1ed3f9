// deploycheck validates moodstream's deployment files with the libraries the real tools use,
// where those tools cannot run here (no Docker engine or compose plugin, no Prometheus):
//
//	deploycheck compose FILE...      load like `docker compose config` (compose-go: schema,
//	                                 interpolation, consistency), and bind mounts / Dockerfiles exist
//	deploycheck prometheus FILE      load a Prometheus configuration (prometheus/config)
//	deploycheck dashboard FILE SRC   parse every PromQL query of a Grafana dashboard; once SRC (the
//	                                 worker's Rust source) has Prometheus metrics, every metric the
//	                                 dashboard reads must be defined there
//	deploycheck otel FILE            every component an OpenTelemetry collector pipeline names is defined
//
// Run from the repository root; each prints one summary line, or the problems and exits 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: deploycheck compose|prometheus|dashboard|otel FILE [ARG]")
		os.Exit(2)
	}
	var summary string
	var problems []string
	var err error
	switch os.Args[1] {
	case "compose":
		summary, problems, err = checkCompose(os.Args[2:])
	case "prometheus":
		summary, err = checkPrometheus(os.Args[2])
	case "dashboard":
		src := ""
		if len(os.Args) > 3 {
			src = os.Args[3]
		}
		summary, problems, err = checkDashboard(os.Args[2], src)
	case "otel":
		summary, problems, err = checkOtel(os.Args[2])
	default:
		err = fmt.Errorf("unknown check %q", os.Args[1])
	}
	if err != nil {
		problems = append(problems, err.Error())
	}
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "deploycheck %s: %s\n", os.Args[1], p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Println(summary)
}

func checkCompose(files []string) (string, []string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", nil, err
	}
	options, err := cli.NewProjectOptions(files,
		cli.WithWorkingDirectory(wd),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		return "", nil, err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return "", nil, err
	}
	// What compose only finds out at `up`: missing bind-mount sources and Dockerfiles.
	var problems []string
	for _, name := range project.ServiceNames() {
		service := project.Services[name]
		for _, v := range service.Volumes {
			if v.Type == types.VolumeTypeBind && !exists(v.Source) {
				problems = append(problems, fmt.Sprintf("service %q mounts %s, which does not exist", name, v.Source))
			}
		}
		if b := service.Build; b != nil && b.DockerfileInline == "" {
			dockerfile := b.Dockerfile
			if dockerfile == "" {
				dockerfile = "Dockerfile"
			}
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(b.Context, dockerfile)
			}
			if !exists(dockerfile) {
				problems = append(problems, fmt.Sprintf("service %q builds with %s, which does not exist", name, dockerfile))
			}
		}
	}
	return fmt.Sprintf("project %q: %d services, %d volumes", project.Name, len(project.Services), len(project.Volumes)), problems, nil
}

func checkPrometheus(file string) (string, error) {
	cfg, err := promconfig.LoadFile(file, false, nil)
	if err != nil {
		return "", err
	}
	jobs := make([]string, 0, len(cfg.ScrapeConfigs))
	for _, sc := range cfg.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
	}
	return fmt.Sprintf("scrape jobs: %s", strings.Join(jobs, ", ")), nil
}

type dashboard struct {
	Panels []struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// Grafana's variables, replaced by values of the right type so the query parses as PromQL.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h",
	"$instance", ".*", "$job", "moodstream",
)

func checkDashboard(file, src string) (string, []string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", nil, err
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return "", nil, fmt.Errorf("%s: %w", file, err)
	}
	var problems []string
	ids := map[int]string{}
	used := map[string]bool{}
	queries := 0
	for _, p := range d.Panels {
		if other, dup := ids[p.ID]; dup {
			problems = append(problems, fmt.Sprintf("panels %q and %q share id %d", other, p.Title, p.ID))
		}
		ids[p.ID] = p.Title
		for _, t := range p.Targets {
			queries++
			expr, err := parser.ParseExpr(grafanaVars.Replace(t.Expr))
			if err != nil {
				problems = append(problems, fmt.Sprintf("panel %q: %v", p.Title, err))
				continue
			}
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				if vs, ok := node.(*parser.VectorSelector); ok && strings.HasPrefix(vs.Name, "moodstream_") {
					used[histogramBase.ReplaceAllString(vs.Name, "")] = true
				}
				return nil
			})
		}
	}
	if queries == 0 {
		problems = append(problems, "no queries")
	}
	names := "metric names not checked: no src directory"
	if src != "" && exists(src) {
		code, err := readRust(src)
		if err != nil {
			return "", problems, err
		}
		// A metric is defined by its full name or, with the registry's "moodstream" prefix, by its
		// short name, as a string literal.
		if strings.Contains(code, "prometheus") {
			for _, m := range sortedKeys(used) {
				short := strings.TrimPrefix(m, "moodstream_")
				if !strings.Contains(code, `"`+m+`"`) && !strings.Contains(code, `"`+short+`"`) {
					problems = append(problems, fmt.Sprintf("metric %s is not defined in %s", m, src))
				}
			}
			names = "metric names found in " + src
		} else {
			names = "metric names not checked: " + src + " has no Prometheus metrics yet"
		}
	}
	return fmt.Sprintf("%d panels, %d queries parse, %d metrics; %s", len(d.Panels), queries, len(used), names), problems, nil
}

var histogramBase = regexp.MustCompile(`_(bucket|sum|count)$`)

func readRust(dir string) (string, error) {
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(path, ".rs") {
			return err
		}
		data, err := os.ReadFile(path)
		b.Write(data)
		return err
	})
	return b.String(), err
}

func checkOtel(file string) (string, []string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", nil, err
	}
	var cfg struct {
		Receivers  map[string]any `yaml:"receivers"`
		Processors map[string]any `yaml:"processors"`
		Exporters  map[string]any `yaml:"exporters"`
		Extensions map[string]any `yaml:"extensions"`
		Service    struct {
			Extensions []string `yaml:"extensions"`
			Pipelines  map[string]struct {
				Receivers  []string `yaml:"receivers"`
				Processors []string `yaml:"processors"`
				Exporters  []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return "", nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(cfg.Service.Pipelines) == 0 {
		return "", nil, errors.New("no pipelines")
	}
	var problems []string
	missing := func(kind string, defined map[string]any, names []string, where string) {
		for _, n := range names {
			if _, ok := defined[n]; !ok {
				problems = append(problems, fmt.Sprintf("%s names %s %q, which is not defined", where, kind, n))
			}
		}
	}
	missing("extension", cfg.Extensions, cfg.Service.Extensions, "service")
	for _, name := range sortedKeys(cfg.Service.Pipelines) {
		p := cfg.Service.Pipelines[name]
		where := "pipeline " + name
		if len(p.Receivers) == 0 || len(p.Exporters) == 0 {
			problems = append(problems, where+" needs receivers and exporters")
		}
		missing("receiver", cfg.Receivers, p.Receivers, where)
		missing("processor", cfg.Processors, p.Processors, where)
		missing("exporter", cfg.Exporters, p.Exporters, where)
	}
	return fmt.Sprintf("pipelines: %s", strings.Join(sortedKeys(cfg.Service.Pipelines), ", ")), problems, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
