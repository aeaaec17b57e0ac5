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
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("contexts:\n- name: lab\n  url: https://lab:8006\n  tokne: ci@pve!t=s1\n"), 0o600)
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
		{name: "a misspelt key is an error", flags: pveFlags{configPath: typo}, error: "config " + typo + `: line 4: unknown key "tokne" (did you mean "token"?)`},
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

// TestDecodeYAMLStrict: a key the settings do not have is an error naming
// the file, the line, the key, and the keys allowed there.
func TestDecodeYAMLStrict(t *testing.T) {
	tests := []struct {
		name  string
		into  any
		yaml  string
		wants []string // in the error; none: no error
	}{
		{name: "contexts file", into: &pveConfigFile{}, yaml: "current-context: lab\ncontexts:\n- name: lab\n  url: https://h:8006\n"},
		{name: "empty file", into: &pveConfigFile{}, yaml: ""},
		{name: "context key", into: &pveConfigFile{}, yaml: "contexts:\n- name: lab\n  fingerprnt: AB\n",
			wants: []string{`line 3: unknown key "fingerprnt" (did you mean "fingerprint"?)`, "known keys here: name, url, token, user, password, fingerprint, insecure, node, storage"}},
		{name: "top-level key", into: &pveConfigFile{}, yaml: "currentContext: lab\n",
			wants: []string{`line 1: unknown key "currentContext"`, "known keys here: current-context, contexts"}},
		{name: "cri config", into: &criConfig{}, yaml: "listen: unix:///run/x.sock\ntlsClientCA: /etc/ca.pem\npinnedImages: [a]\n"},
		{name: "cri key", into: &criConfig{}, yaml: "listen: unix:///run/x.sock\npodCidr: 10.0.0.0/24\n",
			wants: []string{`line 2: unknown key "podCidr" (did you mean "podCIDR"?)`}},
		{name: "cri proxmox key", into: &criConfig{}, yaml: "proxmox:\n  url: https://h:8006\n  nodes: pve1\n",
			wants: []string{`line 3: unknown key "nodes" (did you mean "node"?)`, "known keys here: name, url, token"}},
		{name: "two mistakes", into: &criConfig{}, yaml: "lissen: x\nbrige: vmbr1\n",
			wants: []string{`line 1: unknown key "lissen" (did you mean "listen"?)`, `line 2: unknown key "brige" (did you mean "bridge"?)`}},
		{name: "not YAML", into: &criConfig{}, yaml: "listen: [\n", wants: []string{"config cri.yaml: yaml:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeYAMLStrict("cri.yaml", []byte(tt.yaml), tt.into)
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; decoded %+v", tt.into)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestExampleCRIConfigDecodes: the shipped example stays within the keys
// the daemon knows, now that unknown ones are errors.
func TestExampleCRIConfigDecodes(t *testing.T) {
	const path = "../../scripts/systemd/cri.yaml.example"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c criConfig
	if err := decodeYAMLStrict(path, b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Listen == "" || c.Proxmox == nil || c.Proxmox.Node == "" {
		t.Errorf("decoded %+v", c)
	}
}
