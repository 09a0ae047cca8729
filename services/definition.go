package services

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Annotations a service definition may carry to tell the supervisor how to
// run it.
const (
	// AnnotationReady is the readiness probe: "http+unix:///sock:/path"
	// (GET must answer 200) or "unix:///sock" (a connect must succeed).
	// Without it a service is ready once started.
	AnnotationReady = "io.ddinit.service.ready"
	// AnnotationLiveness is the liveness probe, run every period once the
	// service is ready: "http+unix:///sock:/path" or "http://host:port/path",
	// which must answer 200 (a connect alone proves nothing: the kernel
	// accepts connections for a stopped process). Without an answer for
	// the kill-after time the service is killed and restarted.
	AnnotationLiveness = "io.ddinit.service.liveness"
	// AnnotationLivenessPeriod, AnnotationLivenessTimeout and
	// AnnotationLivenessKillAfter override the liveness timing (durations;
	// defaults 5s, 2s and 30s, or ddinit's config).
	AnnotationLivenessPeriod    = "io.ddinit.service.liveness-period"
	AnnotationLivenessTimeout   = "io.ddinit.service.liveness-timeout"
	AnnotationLivenessKillAfter = "io.ddinit.service.liveness-kill-after"
	// AnnotationDependsOn lists, comma-separated, services that must be
	// ready first. containerd is always a dependency.
	AnnotationDependsOn = "io.ddinit.service.depends-on"
	// AnnotationRequired says whether the system is healthy without it
	// ("false"); the default is "true".
	AnnotationRequired = "io.ddinit.service.required"
	// AnnotationSetting names a setting (e.g. "kubernetes") that must be on
	// for the service to run.
	AnnotationSetting = "io.ddinit.service.setting"
	// AnnotationStopTimeout is how long a SIGTERM gets before SIGKILL.
	AnnotationStopTimeout = "io.ddinit.service.stop-timeout"
	// AnnotationSocket is the service's API socket inside the namespace,
	// what `--expose NAME=ADDR` forwards to.
	AnnotationSocket = "io.ddinit.service.socket"
)

// ServicesDir is where a version pack keeps its service definitions.
const ServicesDir = "/containers/services"

// LoadDefinitions reads every <dir>/<name>/config.json. A definition that
// is not valid JSON, or not a usable spec, is an error naming its file.
func LoadDefinitions(dir string) ([]Definition, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("the version pack has no %s: it defines no services", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("service definitions: %w", err)
	}
	var defs []Definition
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		d, err := LoadDefinition(filepath.Join(dir, e.Name(), "config.json"))
		if err != nil {
			return nil, err
		}
		defs = append(defs, d)
	}
	if err := checkDependencies(defs); err != nil {
		return nil, err
	}
	return defs, nil
}

// LoadDefinition reads one service definition.
func LoadDefinition(path string) (Definition, error) {
	name := filepath.Base(filepath.Dir(path))
	d := Definition{Name: name, Path: path, Required: true, StopTimeout: 10 * time.Second}
	b, err := os.ReadFile(path)
	if err != nil {
		return d, fmt.Errorf("service %s: %w", name, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return d, fmt.Errorf("service %s: %s is not a valid OCI runtime spec: %s", name, path, jsonError(b, err))
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return d, fmt.Errorf("service %s: %s has no process.args", name, path)
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return d, fmt.Errorf("service %s: %s has no root.path", name, path)
	}
	if !validName(name) {
		return d, fmt.Errorf("service %q: a service name is lower-case letters, digits and dashes", name)
	}
	d.Spec = &spec
	a := spec.Annotations
	if v := a[AnnotationReady]; v != "" {
		p, err := ParseProbe(v)
		if err != nil {
			return d, fmt.Errorf("service %s: %s: %w", name, AnnotationReady, err)
		}
		d.Ready = &p
	}
	if v := a[AnnotationLiveness]; v != "" {
		p, err := ParseProbe(v)
		if err != nil {
			return d, fmt.Errorf("service %s: %s: %w", name, AnnotationLiveness, err)
		}
		if !p.Answers() {
			return d, fmt.Errorf("service %s: %s %q only connects: a liveness probe must get an answer (http+unix:///socket:/path or http://host:port/path)", name, AnnotationLiveness, v)
		}
		d.Live = &p
	}
	for key, field := range map[string]*time.Duration{
		AnnotationLivenessPeriod:    &d.LiveTiming.Period,
		AnnotationLivenessTimeout:   &d.LiveTiming.Timeout,
		AnnotationLivenessKillAfter: &d.LiveTiming.KillAfter,
		AnnotationStopTimeout:       &d.StopTimeout,
	} {
		if v := a[key]; v != "" {
			t, err := time.ParseDuration(v)
			if err != nil || t <= 0 {
				return d, fmt.Errorf("service %s: %s %q is not a duration", name, key, v)
			}
			*field = t
		}
	}
	for _, dep := range strings.Split(a[AnnotationDependsOn], ",") {
		if dep = strings.TrimSpace(dep); dep != "" && dep != "containerd" {
			d.DependsOn = append(d.DependsOn, dep)
		}
	}
	if v := a[AnnotationRequired]; v != "" {
		d.Required = v == "true"
	}
	d.Setting = a[AnnotationSetting]
	d.Socket = a[AnnotationSocket]
	return d, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// jsonError says where in the file a JSON error is.
func jsonError(b []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + strings.Count(string(b[:min(int(se.Offset), len(b))]), "\n")
		return fmt.Sprintf("line %d: %v", line, err)
	}
	return err.Error()
}

// checkDependencies refuses unknown dependencies and cycles.
func checkDependencies(defs []Definition) error {
	_, err := StartOrder(defs)
	return err
}

// StartOrder sorts defs so that every service comes after what it depends
// on; ties keep name order.
func StartOrder(defs []Definition) ([]Definition, error) {
	byName := map[string]Definition{}
	for _, d := range defs {
		byName[d.Name] = d
	}
	names := make([]string, 0, len(defs))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []Definition
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, path []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("services depend on each other in a cycle: %s", strings.Join(append(path, n), " -> "))
		case 2:
			return nil
		}
		state[n] = 1
		for _, dep := range byName[n].DependsOn {
			if _, ok := byName[dep]; !ok {
				return fmt.Errorf("service %s depends on %s, which the version pack does not define", n, dep)
			}
			if err := visit(dep, append(path, n)); err != nil {
				return err
			}
		}
		state[n] = 2
		out = append(out, byName[n])
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}
