package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/pve-image/pve-image/batch"
	"github.com/pve-image/pve-image/tests/pvesim"
	. "github.com/pve-image/pve-image/tests/testenv"
)

// ciJob is a job of a CI example as the test runs it: its pve-image
// commands, the variables it sets, and one run per matrix entry.
type ciJob struct {
	name     string
	env      []string // the job's variable names
	commands []string
	runs     []map[string]string // per matrix entry: the variables it sets
}

// pveImageCommands picks the pve-image command lines out of a script,
// joining continued lines; install steps and the like are the CI's.
func pveImageCommands(script string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if cur.Len() > 0 || strings.HasPrefix(line, "pve-image ") {
			cur.WriteString(strings.TrimSuffix(line, "\\"))
			if strings.HasSuffix(line, "\\") {
				cur.WriteString(" ")
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	return out
}

// githubJobs reads a GitHub Actions workflow.
func githubJobs(t *testing.T, path string) []ciJob {
	var wf struct {
		Jobs yaml.Node `yaml:"jobs"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, path)), &wf); err != nil {
		t.Fatal(err)
	}
	var jobs []ciJob
	for i := 0; i+1 < len(wf.Jobs.Content); i += 2 {
		var j struct {
			Env      map[string]string `yaml:"env"`
			Strategy struct {
				Matrix map[string][]string `yaml:"matrix"`
			} `yaml:"strategy"`
			Steps []struct {
				Run string `yaml:"run"`
			} `yaml:"steps"`
		}
		if err := wf.Jobs.Content[i+1].Decode(&j); err != nil {
			t.Fatal(err)
		}
		job := ciJob{name: wf.Jobs.Content[i].Value}
		for k := range j.Env {
			job.env = append(job.env, k)
		}
		for _, s := range j.Steps {
			job.commands = append(job.commands, pveImageCommands(s.Run)...)
		}
		job.runs = []map[string]string{{}}
		for k, vs := range j.Strategy.Matrix {
			job.runs = nil
			for _, v := range vs {
				job.runs = append(job.runs, map[string]string{"matrix." + k: v})
			}
		}
		jobs = append(jobs, job)
	}
	return jobs
}

// gitlabJobs reads a GitLab CI file, its global variables into each job.
func gitlabJobs(t *testing.T, path string) []ciJob {
	var f map[string]yaml.Node
	if err := yaml.Unmarshal([]byte(readFile(t, path)), &f); err != nil {
		t.Fatal(err)
	}
	var stages []string
	st := f["stages"]
	st.Decode(&stages)
	var global map[string]string
	vars := f["variables"]
	vars.Decode(&global)
	var jobs []ciJob
	for _, stage := range stages {
		for name, n := range f {
			var j struct {
				Stage     string            `yaml:"stage"`
				Parallel  int               `yaml:"parallel"`
				Script    []string          `yaml:"script"`
				Variables map[string]string `yaml:"variables"`
			}
			if n.Kind != yaml.MappingNode || n.Decode(&j) != nil || j.Stage != stage {
				continue
			}
			// The project's CI/CD variables (the secrets) reach every job.
			job := ciJob{name: name, runs: []map[string]string{{}}, env: []string{"PVE_URL", "PVE_TOKEN", "PVE_FINGERPRINT"}}
			for k, v := range global {
				job.env = append(job.env, k+"="+v)
			}
			for k, v := range j.Variables {
				job.env = append(job.env, k+"="+v)
			}
			for _, s := range j.Script {
				job.commands = append(job.commands, pveImageCommands(s)...)
			}
			if j.Parallel > 1 {
				job.runs = nil
				for i := 1; i <= j.Parallel; i++ {
					job.runs = append(job.runs, map[string]string{"CI_NODE_INDEX": strconv.Itoa(i), "CI_NODE_TOTAL": strconv.Itoa(j.Parallel)})
				}
			}
			jobs = append(jobs, job)
		}
	}
	return jobs
}

// TestCIExamples runs the pve-image commands of examples/ci, as written,
// job after job (each on a fresh machine: its own cache), against a local
// registry with credentials as the template registry and the Proxmox
// simulator: the lock, the shards that meet in the registry, the sync to
// every node. The examples cannot rot without this test failing.
func TestCIExamples(t *testing.T) {
	examples := filepath.Join(RepoRoot(), "examples", "ci")
	if _, err := batch.Load(filepath.Join(examples, "pve-images.yaml"), nil); err != nil {
		t.Fatalf("the example build file: %v", err)
	}
	for _, tc := range []struct {
		file string
		jobs func(*testing.T, string) []ciJob
	}{
		{"github-actions.yml", githubJobs},
		{"gitlab-ci.yml", gitlabJobs},
	} {
		t.Run(tc.file, func(t *testing.T) {
			reg := StartRegistry(t, RegistryOptions{})
			templates := StartRegistry(t, RegistryOptions{Auth: true})
			sim := startSim(t, pvesim.Options{})
			base := baseLayer(t)
			var images strings.Builder
			for i := range 4 {
				reg.Push(t, fmt.Sprintf("ci%d:1", i), fleetImage(t, base, amd64, fmt.Sprint("ci", i)))
				fmt.Fprintf(&images, "  - %s/ci%d:1\n", reg.Host, i)
			}
			work := t.TempDir()
			writeFile(t, filepath.Join(work, "pve-images.yaml"), fmt.Sprintf("images:\n%soutput:\n  registry: %s/pve-templates\n", images.String(), templates.Host))
			creds := templates.User + ":" + templates.Password
			// What the CI provides: secrets, the matrix, its own variables.
			provided := map[string]string{
				"PVE_URL": sim.URL(), "PVE_TOKEN": simToken + "=" + simSecret, "PVE_FINGERPRINT": sim.Fingerprint(),
				"PVE_IMAGE_TEMPLATE_REGISTRY_CREDS": creds, "CI_REGISTRY_USER": templates.User, "CI_REGISTRY_PASSWORD": templates.Password,
				"CI_PROJECT_DIR": work, "PVE_IMAGE_VERSION": "v0.1.0",
			}
			jobs := tc.jobs(t, filepath.Join(examples, tc.file))
			var names []string
			for _, j := range jobs {
				names = append(names, j.name)
			}
			if !slices.Equal(names, []string{"lock", "build", "sync"}) {
				t.Fatalf("jobs %v, want lock, build, sync", names)
			}
			ran := 0
			for _, j := range jobs {
				for i, m := range j.runs {
					env := append(os.Environ(), "PATH="+filepath.Dir(pveImage)+":"+os.Getenv("PATH"),
						"DOCKER_CONFIG="+filepath.Join(work, "no-docker-config"), "PVE_IMAGE_INIT_BINARY="+pveImageInit,
						// A fresh machine per job, unless the job says where.
						"PVE_IMAGE_CACHE_DIR="+filepath.Join(t.TempDir(), "cache"))
					for _, kv := range j.env {
						k, v, hasValue := strings.Cut(kv, "=")
						switch {
						case m["matrix.shard"] != "" && k == "SHARD":
							v = m["matrix.shard"]
						case hasValue:
							v = os.Expand(v, func(n string) string { return provided[n] })
						case k == "PVE_IMAGE_CACHE_DIR":
							continue
						default:
							var ok bool
							if v, ok = provided[k]; !ok {
								t.Fatalf("%s: job %s sets %s, which this test does not provide", tc.file, j.name, k)
							}
						}
						env = append(env, k+"="+v)
					}
					for k, v := range m {
						if !strings.HasPrefix(k, "matrix.") {
							env = append(env, k+"="+v)
						}
					}
					for _, line := range j.commands {
						cmd := exec.Command("bash", "-euo", "pipefail", "-c", line)
						cmd.Dir, cmd.Env = work, env
						var out bytes.Buffer
						cmd.Stdout, cmd.Stderr = &out, &out
						if err := cmd.Run(); err != nil {
							t.Fatalf("%s, job %s run %d: %s: %v\n%s", tc.file, j.name, i+1, line, err, out.String())
						}
						ran++
					}
					if j.name == "build" {
						// Each shard's report, as the CI would keep it.
						os.Rename(filepath.Join(work, "report.json"), filepath.Join(work, fmt.Sprintf("report-%d.json", i)))
					}
				}
			}
			if ran < 4 {
				t.Errorf("ran %d commands", ran)
			}
			// Every image built by exactly one shard, then on both nodes.
			built := map[string]int{}
			reports, _ := filepath.Glob(filepath.Join(work, "report-*.json"))
			for _, p := range reports {
				for _, r := range readReport(t, p).Results {
					built[r.Ref]++
				}
			}
			if len(reports) < 2 || len(built) != 4 {
				t.Errorf("%d shard reports covering %v", len(reports), built)
			}
			for ref, n := range built {
				if n != 1 {
					t.Errorf("%s built by %d shards", ref, n)
				}
			}
			for _, node := range []string{"pve1", "pve2"} {
				if got := storageFiles(t, sim, node, "local"); len(got) != 4 {
					t.Errorf("%s holds %v", node, got)
				}
			}
			if !strings.Contains(readFile(t, filepath.Join(work, "pve-images.lock")), reg.Host+"/ci3:1") {
				t.Error("no lock")
			}
		})
	}
}
