package template

import (
	"slices"
	"strings"
	"testing"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

func TestPVEConfig(t *testing.T) {
	app := Meta{Arch: "amd64", Config: RunConfig{Entrypoint: []string{"/app"}, Cmd: []string{"serve"}, Env: []string{"PATH=/opt/bin", "A=1"}},
		Run: RunInfo{Kind: "application", Init: "shim", OSType: "unmanaged", Spec: &runspec.Spec{Env: []string{"PATH=/opt/bin", "A=1", "HOME=/"}}}}
	pid1 := app
	pid1.Run = RunInfo{Kind: "application", Init: "none", OSType: "unmanaged"}
	systemd := Meta{Arch: "arm64", Run: RunInfo{Kind: "system", Init: "none", InitSystem: "systemd", OSType: "debian"}}

	tests := []struct {
		name   string
		m      Meta
		native bool
		o      Overrides
		want   map[string]string
		net    string
		err    string
	}{
		{"shim on 9.1", app, true, Overrides{}, map[string]string{"ostype": "unmanaged", "arch": "amd64", "cmode": "console",
			"entrypoint": "/sbin/pve-image-init", "env": "PATH=/opt/bin\x00A=1\x00HOME=/\x00PVE_IMAGE_NET=host"}, "host-managed=1", ""},
		{"user env merged, PATH kept", app, true, Overrides{Env: []string{"A=2", "B=3"}}, map[string]string{"ostype": "unmanaged", "arch": "amd64",
			"cmode": "console", "entrypoint": "/sbin/pve-image-init", "env": "PATH=/opt/bin\x00A=2\x00HOME=/\x00B=3\x00PVE_IMAGE_NET=host"}, "host-managed=1", ""},
		{"user entrypoint through the shim", app, true, Overrides{Entrypoint: []string{"/app", "migrate"}}, map[string]string{"ostype": "unmanaged",
			"arch": "amd64", "cmode": "console", "entrypoint": "/sbin/pve-image-init -- /app migrate",
			"env": "PATH=/opt/bin\x00A=1\x00HOME=/\x00PVE_IMAGE_NET=host"}, "host-managed=1", ""},
		{"no shim: the program as PID 1", pid1, true, Overrides{}, map[string]string{"ostype": "unmanaged", "arch": "amd64", "cmode": "console",
			"entrypoint": "/app serve", "env": "PATH=/opt/bin\x00A=1"}, "host-managed=1", ""},
		{"shim on 7/8", app, false, Overrides{}, map[string]string{"ostype": "unmanaged", "arch": "amd64"}, "", ""},
		{"env on 7/8", app, false, Overrides{Env: []string{"A=2"}}, nil, "", "need Proxmox 9.1"},
		{"systemd", systemd, true, Overrides{}, map[string]string{"ostype": "debian", "arch": "arm64", "features": "nesting=1"}, "", ""},
		{"spaces and quotes pass through the shim's environment", app, true, Overrides{Entrypoint: []string{"sh", "-c", "echo \"two words\"\nexit 3"}},
			map[string]string{"ostype": "unmanaged", "arch": "amd64", "cmode": "console", "entrypoint": "/sbin/pve-image-init",
				"env": "PATH=/opt/bin\x00A=1\x00HOME=/\x00PVE_IMAGE_ARGV=[\"sh\",\"-c\",\"echo \\\"two words\\\"\\nexit 3\"]\x00PVE_IMAGE_NET=host"}, "host-managed=1", ""},
		{"control characters in env go through the shim's environment", app, true, Overrides{Env: []string{"CERT=a\nb", "B=3"}},
			map[string]string{"ostype": "unmanaged", "arch": "amd64", "cmode": "console", "entrypoint": "/sbin/pve-image-init",
				"env": "PATH=/opt/bin\x00A=1\x00HOME=/\x00B=3\x00PVE_IMAGE_NET=host\x00PVE_IMAGE_ENV=[\"CERT=a\\nb\"]"}, "host-managed=1", ""},
		{"spaces cannot pass lxc.init.cmd without the shim", pid1, true, Overrides{Entrypoint: []string{"/app", "two words"}}, nil, "", "LXC 5 splits"},
		{"control characters cannot pass Proxmox's env without the shim", pid1, true, Overrides{Env: []string{"CERT=a\nb"}}, nil, "", "control characters"},
		{"bad env", app, true, Overrides{Env: []string{"NOEQUALS"}}, nil, "", "want KEY=value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.m.PVEConfig(tc.native, tc.o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Options) != len(tc.want) || c.NetOptions != tc.net {
				t.Fatalf("got %q net %q, want %q net %q", c.Options, c.NetOptions, tc.want, tc.net)
			}
			for k, v := range tc.want {
				if c.Options[k] != v {
					t.Errorf("%s = %q, want %q", k, c.Options[k], v)
				}
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"PATH=/bin", "A=1", "B=2"}, []string{"B=3", "C=4", "A=5"})
	if want := []string{"PATH=/bin", "A=5", "B=3", "C=4"}; !slices.Equal(got, want) {
		t.Errorf("MergeEnv = %q, want %q", got, want)
	}
}
