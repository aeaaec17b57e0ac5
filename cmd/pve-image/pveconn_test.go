package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolvePVEContext(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte(`current-context: lab
contexts:
- name: lab
  url: https://lab:8006
  token: ci@pve!t=s1
  node: pve1
  fingerprint: AA:BB
- name: prod
  url: https://prod:8006
  user: root@pam
  password: pw
  node: pve9
  storage: nfs
  insecure: true
`), 0o600)
	for _, k := range []string{"PVE_URL", "PVE_TOKEN", "PVE_USER", "PVE_PASSWORD", "PVE_FINGERPRINT", "PVE_INSECURE", "PVE_CONTEXT", "PVE_NODE", "PVE_STORAGE", "PVE_IMAGE_CONFIG"} {
		t.Setenv(k, "")
	}
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "none"))
	tests := []struct {
		name  string
		flags pveFlags
		env   map[string]string
		want  pveContext
		error string
	}{
		{name: "current context", flags: pveFlags{configPath: cfg},
			want: pveContext{Name: "lab", URL: "https://lab:8006", Token: "ci@pve!t=s1", Node: "pve1", Fingerprint: "AA:BB", Storage: "local"}},
		{name: "chosen context", flags: pveFlags{configPath: cfg, context: "prod"},
			want: pveContext{Name: "prod", URL: "https://prod:8006", User: "root@pam", Password: "pw", Node: "pve9", Storage: "nfs", Insecure: true}},
		{name: "context from env, file from env", env: map[string]string{"PVE_IMAGE_CONFIG": cfg, "PVE_CONTEXT": "prod"},
			want: pveContext{Name: "prod", URL: "https://prod:8006", User: "root@pam", Password: "pw", Node: "pve9", Storage: "nfs", Insecure: true}},
		{name: "flag beats env beats file", flags: pveFlags{configPath: cfg, node: "flagnode"}, env: map[string]string{"PVE_NODE": "envnode", "PVE_URL": "https://env:8006"},
			want: pveContext{Name: "lab", URL: "https://env:8006", Token: "ci@pve!t=s1", Node: "flagnode", Fingerprint: "AA:BB", Storage: "local"}},
		// A token given closer to the command replaces the file's user.
		{name: "token over a file user", flags: pveFlags{configPath: cfg, context: "prod", token: "x@pve!y=z"},
			want: pveContext{Name: "prod", URL: "https://prod:8006", Token: "x@pve!y=z", Node: "pve9", Storage: "nfs", Insecure: true}},
		{name: "user over a file token", flags: pveFlags{configPath: cfg}, env: map[string]string{"PVE_USER": "me@pam", "PVE_PASSWORD": "p"},
			want: pveContext{Name: "lab", URL: "https://lab:8006", User: "me@pam", Password: "p", Node: "pve1", Fingerprint: "AA:BB", Storage: "local"}},
		{name: "PVE_INSECURE", flags: pveFlags{url: "https://h:8006"}, env: map[string]string{"PVE_INSECURE": "1"},
			want: pveContext{URL: "https://h:8006", Storage: "local", Insecure: true}},
		{name: "no file is fine", flags: pveFlags{url: "https://h:8006"}, want: pveContext{URL: "https://h:8006", Storage: "local"}},
		{name: "unknown context", flags: pveFlags{configPath: cfg, context: "nope"}, error: `has no context "nope"`},
		{name: "context without a file", flags: pveFlags{context: "lab"}, error: `context "lab": no config file`},
		{name: "a named file must exist", flags: pveFlags{configPath: filepath.Join(dir, "missing.yaml")}, error: "missing.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := tt.flags.resolve()
			if tt.error != "" {
				if err == nil || !strings.Contains(err.Error(), tt.error) {
					t.Fatalf("error %v, want %q", err, tt.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
