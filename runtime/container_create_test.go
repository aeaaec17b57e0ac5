package runtime

import (
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/template"
)

func TestOverrides(t *testing.T) {
	shim := &template.Meta{Config: template.RunConfig{Entrypoint: []string{"/app"}, Cmd: []string{"serve"}}, Run: template.RunInfo{Init: "shim"}}
	system := &template.Meta{Run: template.RunInfo{Init: "none"}}
	shimUser := &template.Meta{Config: template.RunConfig{Entrypoint: []string{"/app"}, User: "app:staff"}, Run: template.RunInfo{Init: "shim"}}
	uid := func(n int64) *runtimeapi.LinuxContainerConfig {
		return &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: n}}}
	}
	tests := []struct {
		name  string
		c     *runtimeapi.ContainerConfig
		meta  *template.Meta
		want  template.Overrides
		code  codes.Code
		error string
	}{
		{name: "nothing", c: &runtimeapi.ContainerConfig{}, meta: shim},
		// Kubernetes: command replaces ENTRYPOINT and drops CMD; args alone
		// replace CMD after the image's ENTRYPOINT.
		{name: "command and args", c: &runtimeapi.ContainerConfig{Command: []string{"/bin/x"}, Args: []string{"a"}}, meta: shim,
			want: template.Overrides{Entrypoint: []string{"/bin/x", "a"}}},
		{name: "command alone", c: &runtimeapi.ContainerConfig{Command: []string{"/bin/x"}}, meta: shim,
			want: template.Overrides{Entrypoint: []string{"/bin/x"}}},
		{name: "args alone", c: &runtimeapi.ContainerConfig{Args: []string{"b", "c"}}, meta: shim,
			want: template.Overrides{Entrypoint: []string{"/app", "b", "c"}}},
		{name: "env, cwd and user", c: &runtimeapi.ContainerConfig{Envs: []*runtimeapi.KeyValue{{Key: "A", Value: []byte("1=2")}}, WorkingDir: "/w",
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				RunAsUser: &runtimeapi.Int64Value{Value: 1000}, RunAsGroup: &runtimeapi.Int64Value{Value: 0}}}}, meta: shim,
			want: template.Overrides{Env: []string{"A=1=2", "PVE_IMAGE_CWD=/w", "PVE_IMAGE_UID=1000", "PVE_IMAGE_GID=0"}}},
		{name: "uid 0 is a uid", c: &runtimeapi.ContainerConfig{Linux: uid(0)}, meta: shim, want: template.Overrides{Env: []string{"PVE_IMAGE_UID=0"}}},
		{name: "reserved env", c: &runtimeapi.ContainerConfig{Envs: []*runtimeapi.KeyValue{{Key: "PVE_IMAGE_UID", Value: []byte("0")}}}, meta: shim,
			code: codes.InvalidArgument, error: "not allowed"},
		{name: "empty env key", c: &runtimeapi.ContainerConfig{Envs: []*runtimeapi.KeyValue{{Key: "", Value: []byte("x")}}}, meta: shim,
			code: codes.InvalidArgument, error: "not allowed"},
		// kubelet sends the image's own USER back by name: nothing to change.
		{name: "the image's user by name", c: &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "app"}}},
			meta: shimUser},
		{name: "another user by name", c: &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "www-data"}}},
			meta: shimUser, want: template.Overrides{Env: []string{"PVE_IMAGE_USER=www-data"}}},
		{name: "supplemental groups", c: &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{SupplementalGroups: []int64{2000, 44}}}},
			meta: shim, want: template.Overrides{Env: []string{"PVE_IMAGE_GROUPS=2000,44"}}},
		{name: "command of a system image", c: &runtimeapi.ContainerConfig{Command: []string{"/bin/x"}}, meta: system,
			code: codes.FailedPrecondition, error: "no pve-image-init"},
		{name: "env of a system image passes", c: &runtimeapi.ContainerConfig{Envs: []*runtimeapi.KeyValue{{Key: "A", Value: []byte("1")}}}, meta: system,
			want: template.Overrides{Env: []string{"A=1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := overrides(tt.c, tt.meta)
			if tt.error != "" {
				if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.error) {
					t.Fatalf("error %v, want %s with %q", err, tt.code, tt.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestApplyResources(t *testing.T) {
	tests := []struct {
		name string
		r    *runtimeapi.LinuxContainerResources
		want map[string]string
	}{
		{"none", nil, map[string]string{}},
		{"memory rounds up to MiB", &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 100<<20 + 1}, map[string]string{"memory": "101", "swap": "0"}},
		{"memory at least 16 MiB", &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 20}, map[string]string{"memory": "16", "swap": "0"}},
		{"cpu quota", &runtimeapi.LinuxContainerResources{CpuQuota: 150000, CpuPeriod: 100000}, map[string]string{"cpulimit": "1.50"}},
		{"quota without period", &runtimeapi.LinuxContainerResources{CpuQuota: 150000}, map[string]string{}},
		{"shares capped", &runtimeapi.LinuxContainerResources{CpuShares: 262144}, map[string]string{"cpuunits": "10000"}},
		{"shares", &runtimeapi.LinuxContainerResources{CpuShares: 512}, map[string]string{"cpuunits": "512"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]string{}
			applyResources(got, tt.r)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHostnameAndTags(t *testing.T) {
	md := func(name string) *runtimeapi.PodSandboxMetadata { return &runtimeapi.PodSandboxMetadata{Name: name} }
	ctr := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}
	tests := []struct {
		sb   *sandboxRecord
		want string
	}{
		{&sandboxRecord{Hostname: "Web_0.example", Metadata: md("p")}, "web-0-example"},
		{&sandboxRecord{Metadata: md("nginx-7d9f")}, "nginx-7d9f"},
		{&sandboxRecord{Metadata: md("")}, "app"},
		{&sandboxRecord{Hostname: "___", Metadata: md("")}, "pod"},
		{&sandboxRecord{Hostname: "a-very-long-name-that-goes-on-and-on-beyond-the-sixty-three-bytes-dns-allows", Metadata: md("")},
			"a-very-long-name-that-goes-on-and-on-beyond-the-sixty-three-byt"},
	}
	for _, tt := range tests {
		if got := hostname(tt.sb, ctr); got != tt.want {
			t.Errorf("hostname(%q, %q) = %q, want %q", tt.sb.Hostname, tt.sb.Metadata.GetName(), got, tt.want)
		}
	}
	if got := tagSafe("5F0C-uid_1.x/y:z"); got != "5f0c-uid_1.xyz" {
		t.Errorf("tagSafe = %q", got)
	}
}
