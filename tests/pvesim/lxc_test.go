package pvesim

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func createCT(t testing.TB, s *Server, a auth, node string, params url.Values) (reply, map[string]any) {
	t.Helper()
	r := api(t, s, a, "POST", "/nodes/"+node+"/lxc", params)
	if r.code != 200 {
		return r, nil
	}
	return r, waitTask(t, s, r.str())
}

// leftovers lists what a container may leave behind: its config and its
// disk image on the shared storage.
func leftovers(s *Server, vmid int) []string {
	var out []string
	for _, n := range s.opts.Nodes {
		if _, ok := s.Container(n, vmid); ok {
			out = append(out, "config on "+n)
		}
		if ents, _ := os.ReadDir(filepath.Join(s.dir, n, "lxc")); len(ents) > 0 {
			out = append(out, "lxc dir on "+n)
		}
	}
	if _, err := os.Stat(filepath.Join(s.StoragePath("", "shared"), "images", fmt.Sprint(vmid))); err == nil {
		out = append(out, "disk image")
	}
	return out
}

func TestLXCCreate(t *testing.T) {
	s := newSim(t, Options{})
	deb := putTemplate(t, s, "pve1", "local", "debian-12.tar.zst", debianFiles())
	shared := putTemplate(t, s, "", "shared", "debian-12.tar.zst", debianFiles())
	wolfiFiles := debianFiles()
	wolfiFiles["etc/os-release"] = tfile{data: []byte("ID=wolfi\nNAME=Wolfi\n")}
	delete(wolfiFiles, "etc/debian_version")
	wolfi := putTemplate(t, s, "pve1", "local", "wolfi.tar.gz", wolfiFiles)
	bare := putTemplate(t, s, "pve1", "local", "bare.tar.zst", map[string]tfile{"app": {mode: 0o755, data: []byte("#!x")}})

	vmid := 100
	next := func() string { vmid++; return fmt.Sprint(vmid) }
	cases := []struct {
		name      string
		node      string
		params    url.Values
		code      int    // of the POST
		reason    string // of the POST, or ""
		errs      map[string]string
		exit      string // of the task
		logHas    []string
		conf      map[string]string // config entries expected afterwards
		confMatch map[string]string // config entries matching a regexp
		fail      string            // FailNextTask("vzcreate", fail)
	}{
		{name: "default rootfs on local", params: url.Values{"ostemplate": {deb}}, code: 400, reason: "Parameter verification failed.",
			errs: map[string]string{"storage": "storage 'local' does not support container directories"}},
		{name: "rootfs on local", params: url.Values{"ostemplate": {deb}, "rootfs": {"local:8"}}, code: 400,
			errs: map[string]string{"storage": "storage 'local' does not support container directories"}},
		{name: "on local-lvm", params: url.Values{"ostemplate": {deb}, "rootfs": {"local-lvm:8"}, "net0": {"name=eth0,bridge=vmbr0,ip=dhcp"}},
			code: 200, exit: "OK", logHas: []string{`Logical volume "vm-`, "extracting archive '", "Detected container architecture: amd64"},
			conf: map[string]string{"ostype": "debian", "arch": "amd64", "memory": "512", "swap": "512", "unprivileged": "1"},
			confMatch: map[string]string{"rootfs": `^local-lvm:vm-\d+-disk-0,size=8G$`, "hostname": `^CT\d+$`,
				"net0": `^name=eth0,bridge=vmbr0,ip=dhcp,hwaddr=BC:24:11:[0-9A-F:]{8},type=veth$`}},
		{name: "storage param and size", params: url.Values{"ostemplate": {shared}, "storage": {"shared"}, "rootfs": {"2.5"}, "hostname": {"web"}, "memory": {"256"}, "cores": {"2"}, "tags": {"b,a;b"}},
			code: 200, exit: "OK", logHas: []string{"Formatting '"},
			conf:      map[string]string{"hostname": "web", "memory": "256", "cores": "2", "tags": "a;b"},
			confMatch: map[string]string{"rootfs": `^shared:\d+/vm-\d+-disk-0\.raw,size=2560M$`}},
		{name: "unexpected ostype warns", params: url.Values{"ostemplate": {deb}, "rootfs": {"local-lvm:1"}, "ostype": {"alpine"}},
			code: 200, exit: "WARNINGS: 1", logHas: []string{"WARN: got unexpected ostype (debian != alpine)"}, conf: map[string]string{"ostype": "debian"}},
		{name: "unknown os-release ID", params: url.Values{"ostemplate": {wolfi}, "rootfs": {"shared:1"}},
			code: 200, exit: "unable to create CT %d - unable to detect OS distribution",
			logHas: []string{"WARN: unknown ID 'wolfi' in /etc/os-release file, trying fallback detection"}},
		{name: "unknown ID with ostype unmanaged", params: url.Values{"ostemplate": {wolfi}, "rootfs": {"shared:1"}, "ostype": {"unmanaged"}, "arch": {"arm64"}},
			code: 200, exit: "OK", conf: map[string]string{"ostype": "unmanaged", "arch": "arm64"}},
		{name: "no os-release at all", params: url.Values{"ostemplate": {bare}, "rootfs": {"local-lvm:1"}},
			code: 200, exit: "WARNINGS: 1", logHas: []string{"falling back to 'unmanaged'", "Falling back to amd64."},
			conf: map[string]string{"ostype": "unmanaged", "arch": "amd64"}},
		{name: "template only on another node", node: "pve2", params: url.Values{"ostemplate": {deb}, "rootfs": {"shared:1"}},
			code: 200, exit: "unable to create CT %d - failed to open '" + filepath.Join(s.StoragePath("pve2", "local"), "template", "cache", "debian-12.tar.zst") + "': No such file or directory"},
		{name: "shared template on another node", node: "pve2", params: url.Values{"ostemplate": {shared}, "rootfs": {"shared:1"}}, code: 200, exit: "OK"},
		{name: "injected failure cleans up", params: url.Values{"ostemplate": {deb}, "rootfs": {"shared:1"}}, fail: "no space left",
			code: 200, exit: "unable to create CT %d - no space left"},
		{name: "app container options", params: url.Values{"ostemplate": {deb}, "rootfs": {"local-lvm:1"}, "entrypoint": {"/app --serve"},
			"env": {"A=1\x00B=two words"}, "cmode": {"console"}, "net0": {"name=eth0,bridge=vmbr0,ip=dhcp,host-managed=1"}, "features": {"nesting=1"}},
			code: 200, exit: "OK", conf: map[string]string{"entrypoint": "/app --serve", "env": "A=1\x00B=two words", "cmode": "console", "features": "nesting=1"}},
		{name: "start with a missing bridge", params: url.Values{"ostemplate": {deb}, "rootfs": {"local-lvm:1"}, "net0": {"name=eth0,bridge=vmbr9"}, "start": {"1"}},
			code: 200, exit: "bridge 'vmbr9' does not exist", conf: map[string]string{"ostype": "debian"}},
		{name: "bad ostype", params: url.Values{"ostemplate": {deb}, "ostype": {"windows"}}, code: 400,
			errs: map[string]string{"ostype": "value 'windows' does not have a value in the enumeration 'debian, devuan, ubuntu, centos, fedora, opensuse, archlinux, alpine, gentoo, nixos, unmanaged'"}},
		{name: "short password", params: url.Values{"ostemplate": {deb}, "password": {"abc"}}, code: 400, errs: map[string]string{"password": "value must be at least 5 characters long"}},
		{name: "boolean as true", params: url.Values{"ostemplate": {deb}, "start": {"true"}}, code: 400, errs: map[string]string{"start": "type check ('boolean') failed - got 'true'"}},
		{name: "unknown parameter", params: url.Values{"ostemplate": {deb}, "name": {"x"}}, code: 400,
			errs: map[string]string{"name": "property is not defined in schema and the schema does not allow additional properties"}},
		{name: "template not a vztmpl", params: url.Values{"ostemplate": {"local:iso/x.iso"}, "rootfs": {"local-lvm:1"}}, code: 500,
			reason: "unable to use volume local:iso/x.iso - content type needs to be 'vztmpl'"},
		{name: "unknown storage", params: url.Values{"ostemplate": {deb}, "rootfs": {"zfs:1"}}, code: 500, reason: "storage 'zfs' does not exist"},
		{name: "missing ostemplate", params: url.Values{}, code: 400, errs: map[string]string{"ostemplate": "property is missing and it is not optional"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := next()
			node := tc.node
			if node == "" {
				node = "pve1"
			}
			params := url.Values{"vmid": {id}}
			for k, v := range tc.params {
				params[k] = v
			}
			if tc.fail != "" {
				s.FailNextTask("vzcreate", tc.fail)
			}
			r, st := createCT(t, s, rootAuth, node, params)
			r.expect(t, tc.code, tc.reason, tc.errs)
			if r.code != 200 {
				if l := leftovers(s, vmid); len(l) > 0 {
					t.Fatalf("left behind: %v", l)
				}
				return
			}
			upid := r.str()
			if !strings.HasPrefix(upid, "UPID:"+node+":") || !strings.Contains(upid, ":vzcreate:"+id+":") {
				t.Fatalf("UPID %s", upid)
			}
			exit := tc.exit
			if strings.Contains(exit, "%d") {
				exit = fmt.Sprintf(exit, vmid)
			}
			log := taskLogText(t, s, upid)
			if st["exitstatus"] != exit {
				t.Fatalf("exitstatus %q, want %q\n%s", st["exitstatus"], exit, log)
			}
			for _, want := range tc.logHas {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}
			ct, ok := s.Container(node, vmid)
			failed := exit != "OK" && !strings.HasPrefix(exit, "WARNINGS")
			if failed && tc.conf == nil {
				if l := leftovers(s, vmid); len(l) > 0 {
					t.Fatalf("failed create left behind: %v", l)
				}
				return
			}
			if !ok {
				t.Fatal("no container")
			}
			for k, v := range tc.conf {
				if ct.Config[k] != v {
					t.Errorf("config %s = %q, want %q", k, ct.Config[k], v)
				}
			}
			for k, re := range tc.confMatch {
				if !regexp.MustCompile(re).MatchString(ct.Config[k]) {
					t.Errorf("config %s = %q, want /%s/", k, ct.Config[k], re)
				}
			}
			if _, hasLock := ct.Config["lock"]; hasLock || ct.Status != "stopped" {
				t.Errorf("after create: %+v", ct)
			}
		})
	}
}

func TestLXCCreateConflicts(t *testing.T) {
	s := newSim(t, Options{})
	deb := putTemplate(t, s, "", "shared", "d.tar.zst", debianFiles())
	_, st := createCT(t, s, rootAuth, "pve1", url.Values{"vmid": {"100"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("%v", st)
	}
	for _, node := range []string{"pve1", "pve2"} {
		r := api(t, s, rootAuth, "POST", "/nodes/"+node+"/lxc", url.Values{"vmid": {"100"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}})
		if r.code != 500 || r.reason != "CT 100 already exists on node 'pve1'" {
			t.Fatalf("%s: %v", node, r)
		}
	}
	if r := mustOK(t, api(t, s, rootAuth, "GET", "/cluster/nextid", nil)); r.data() != "101" {
		t.Fatalf("nextid %v", r)
	}
	if r := api(t, s, rootAuth, "GET", "/cluster/nextid", url.Values{"vmid": {"100"}}); r.code != 400 || r.errs()["vmid"] != "VM 100 already exists" {
		t.Fatalf("nextid?vmid=100 %v", r)
	}

	t.Run("permissions", func(t *testing.T) {
		s.AddToken(Token{ID: "ci@pve!ct", Secret: "x", Privs: []string{"VM.Allocate", "VM.Config.Network", "VM.Config.Options", "VM.Config.Disk", "Datastore.AllocateSpace", "Datastore.Audit"}})
		ci := tokenAuth("ci@pve!ct", "x")
		cases := []struct {
			name   string
			extra  url.Values
			code   int
			reason string
		}{
			{"nesting is allowed", url.Values{"features": {"nesting=1"}}, 200, ""},
			{"keyctl needs root@pam", url.Values{"features": {"keyctl=1"}}, 403, "Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)"},
			{"memory needs VM.Config.Memory", url.Values{"memory": {"1024"}}, 403, "Permission check failed (/vms/%s, VM.Config.Memory)"},
			{"privileged needs Sys.Modify", url.Values{"unprivileged": {"0"}}, 403, "Permission check failed (/, Sys.Modify)"},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				id := fmt.Sprint(200 + i)
				p := url.Values{"vmid": {id}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}}
				for k, v := range tc.extra {
					p[k] = v
				}
				r := api(t, s, ci, "POST", "/nodes/pve1/lxc", p)
				reason := strings.ReplaceAll(tc.reason, "%s", id)
				if r.code != tc.code || reason != "" && r.reason != reason {
					t.Fatalf("got %v", r)
				}
				if r.code == 200 {
					waitTask(t, s, r.str())
				}
			})
		}
		s.AddToken(Token{ID: "ro@pve!t", Secret: "x", Privs: []string{"Datastore.Audit"}})
		r := api(t, s, tokenAuth("ro@pve!t", "x"), "POST", "/nodes/pve1/lxc", url.Values{"vmid": {"300"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}})
		if r.code != 403 || r.reason != "Permission check failed" {
			t.Fatalf("without VM.Allocate: %v", r)
		}
	})
}

func TestLXCLifecycle(t *testing.T) {
	s := newSim(t, Options{})
	deb := putTemplate(t, s, "", "shared", "d.tar.zst", debianFiles())
	_, st := createCT(t, s, rootAuth, "pve2", url.Values{"vmid": {"120"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}, "hostname": {"app"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("%v", st)
	}
	task := func(method, path string, params url.Values) map[string]any {
		t.Helper()
		r := mustOK(t, api(t, s, rootAuth, method, "/nodes/pve2/lxc/120"+path, params))
		if !strings.HasPrefix(r.str(), "UPID:pve2:") {
			t.Fatalf("UPID %s", r.str())
		}
		return waitTask(t, s, r.str())
	}
	status := func() string {
		return mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve2/lxc/120/status/current", nil)).obj()["status"].(string)
	}
	expectErr := func(method, path, reason string) {
		t.Helper()
		r := api(t, s, rootAuth, method, path, nil)
		if r.code != 500 || r.reason != reason {
			t.Fatalf("%s %s: %v", method, path, r)
		}
	}

	l := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve2/lxc", nil)).list()
	if len(l) != 1 || l[0]["vmid"] != 120.0 || l[0]["name"] != "app" || l[0]["status"] != "stopped" || l[0]["maxmem"] != float64(512<<20) {
		t.Fatalf("list %v", l)
	}
	if l := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/lxc", nil)).list(); len(l) != 0 {
		t.Fatalf("pve1 list %v", l)
	}
	expectErr("GET", "/nodes/pve1/lxc/120/status/current", "Configuration file 'nodes/pve1/lxc/120.conf' does not exist")
	expectErr("POST", "/nodes/pve2/lxc/120/status/stop", "CT 120 not running")
	expectErr("POST", "/nodes/pve2/lxc/120/status/shutdown", "CT 120 not running")

	if st := task("POST", "/status/start", nil); st["exitstatus"] != "OK" || st["type"] != "vzstart" || st["id"] != "120" {
		t.Fatalf("start %v", st)
	}
	if status() != "running" {
		t.Fatal("not running")
	}
	expectErr("POST", "/nodes/pve2/lxc/120/status/start", "CT 120 already running")
	expectErr("DELETE", "/nodes/pve2/lxc/120", "unable to destroy CT 120 - container is running")
	if st := task("POST", "/status/shutdown", url.Values{"timeout": {"5"}}); st["exitstatus"] != "OK" || st["type"] != "vzshutdown" {
		t.Fatalf("shutdown %v", st)
	}
	if status() != "stopped" {
		t.Fatal("not stopped")
	}
	task("POST", "/status/start", nil)
	if st := task("POST", "/status/stop", nil); st["exitstatus"] != "OK" || st["type"] != "vzstop" {
		t.Fatalf("stop %v", st)
	}
	task("POST", "/status/start", nil)
	// Starting a container that does not exist fails in the task.
	r := mustOK(t, api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/120/status/start", nil))
	if st := waitTask(t, s, r.str()); st["exitstatus"] != "Configuration file 'nodes/pve1/lxc/120.conf' does not exist" {
		t.Fatalf("%v", st)
	}
	st = task("DELETE", "", url.Values{"force": {"1"}, "purge": {"1"}})
	if st["exitstatus"] != "WARNINGS: 1" || st["type"] != "vzdestroy" {
		t.Fatalf("destroy %v", st)
	}
	if _, ok := s.Container("pve2", 120); ok {
		t.Fatal("still there")
	}
	expectErr("GET", "/nodes/pve2/lxc/120/config", "Configuration file 'nodes/pve2/lxc/120.conf' does not exist")
}

func TestLXCConfig(t *testing.T) {
	s := newSim(t, Options{})
	deb := putTemplate(t, s, "", "shared", "d.tar.zst", debianFiles())
	_, st := createCT(t, s, rootAuth, "pve1", url.Values{"vmid": {"130"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}, "description": {"old"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("%v", st)
	}
	get := func() map[string]any {
		return mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/lxc/130/config", nil)).obj()
	}
	c := get()
	if c["memory"] != 512.0 || c["unprivileged"] != 1.0 || c["hostname"] != "CT130" || len(c["digest"].(string)) != 40 {
		t.Fatalf("config %v", c)
	}
	// JSON bodies work too; entrypoint/env/cmode are ordinary options.
	r := apiJSON(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/130/config", map[string]any{
		"entrypoint": "/usr/bin/app", "env": "X=1\x00Y=2", "cmode": "console", "delete": "description", "cores": 2,
		"digest": c["digest"],
	})
	if r.code != 200 || r.data() != nil {
		t.Fatalf("PUT %v", r)
	}
	c = get()
	if c["entrypoint"] != "/usr/bin/app" || c["env"] != "X=1\x00Y=2" || c["cmode"] != "console" || c["cores"] != 2.0 || c["description"] != nil {
		t.Fatalf("config %v", c)
	}
	cases := []struct {
		name   string
		params url.Values
		code   int
		reason string
		errs   map[string]string
	}{
		{"stale digest", url.Values{"cores": {"1"}, "digest": {"0000000000000000000000000000000000000000"}}, 500,
			"detected modified configuration - file changed by other user? Try again.", nil},
		{"read-only unprivileged", url.Values{"unprivileged": {"0"}}, 500, "unable to modify read-only option: 'unprivileged'", nil},
		{"delete memory", url.Values{"delete": {"memory"}}, 500, "unable to delete required option 'memory'", nil},
		{"delete and set", url.Values{"delete": {"cores"}, "cores": {"3"}}, 400, "Parameter verification failed.",
			map[string]string{"delete": "you can't use '-cores' and -delete cores' at the same time"}},
		{"nothing", url.Values{}, 500, "no options specified", nil},
		{"bad entrypoint", url.Values{"entrypoint": {"a\x01b"}}, 400, "Parameter verification failed.",
			map[string]string{"entrypoint": "value does not match the regex pattern"}},
		{"unknown bridge", url.Values{"net0": {"name=eth0,bridge=nope"}}, 500, "bridge 'nope' does not exist", nil},
		// parse_property_string's own errors, and check_object's naming
		// a key "param.key".
		{"NIC without keys", url.Values{"net0": {"eth0"}}, 400, "Parameter verification failed.",
			map[string]string{"net0": "invalid format - value without key, but schema does not define a default key\n"}},
		{"NIC key without value", url.Values{"net0": {"name=eth0,bridge="}}, 400, "Parameter verification failed.",
			map[string]string{"net0": "invalid format - missing key in comma-separated list property\n"}},
		{"NIC with a bad MTU", url.Values{"net0": {"name=eth0,bridge=vmbr0,mtu=9"}}, 400, "Parameter verification failed.",
			map[string]string{"net0": "invalid format - format error\nnet0.mtu: value must have a minimum value of 64\n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/130/config", tc.params)
			if r.code != tc.code || r.reason != tc.reason {
				t.Fatalf("got %v", r)
			}
			for k, v := range tc.errs {
				if r.errs()[k] != v {
					t.Errorf("errors[%s] = %q", k, r.errs()[k])
				}
			}
		})
	}
	if r := api(t, s, rootAuth, "PUT", "/nodes/pve2/lxc/130/config", url.Values{"cores": {"1"}}); r.reason != "Configuration file 'nodes/pve2/lxc/130.conf' does not exist" {
		t.Fatalf("wrong node: %v", r)
	}
}

// TestVersionGating: behaviours that arrived with a release follow
// Options.Version.
func TestVersionGating(t *testing.T) {
	s := newSim(t, Options{Version: "8.4.1"})
	deb := putTemplate(t, s, "", "shared", "d.tar.zst", debianFiles())
	cases := []struct {
		name  string
		extra url.Values
		errs  map[string]string
	}{
		{"no entrypoint before 9.1", url.Values{"entrypoint": {"/app"}}, map[string]string{"entrypoint": "property is not defined in schema and the schema does not allow additional properties"}},
		{"no env before 9.1", url.Values{"env": {"A=1"}}, map[string]string{"env": "property is not defined in schema and the schema does not allow additional properties"}},
		// check_object names a key inside a property string "param.key".
		{"no host-managed before 9.1", url.Values{"net0": {"name=eth0,bridge=vmbr0,host-managed=1"}},
			map[string]string{"net0": "invalid format - format error\nnet0.host-managed: property is not defined in schema and the schema does not allow additional properties\n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := url.Values{"vmid": {"100"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}}
			for k, v := range tc.extra {
				p[k] = v
			}
			r := api(t, s, rootAuth, "POST", "/nodes/pve1/lxc", p)
			for k, v := range tc.errs {
				if r.errs()[k] != v {
					t.Fatalf("errors[%s] = %q (%v)", k, r.errs()[k], r)
				}
			}
		})
	}
	t.Run("privileged by default before 9.0", func(t *testing.T) {
		_, st := createCT(t, s, rootAuth, "pve1", url.Values{"vmid": {"101"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}})
		if st["exitstatus"] != "OK" {
			t.Fatalf("%v", st)
		}
		if ct, _ := s.Container("pve1", 101); ct.Config["unprivileged"] != "" {
			t.Fatalf("config %v", ct.Config)
		}
	})
	t.Run("no plain .tar templates before 9.1", func(t *testing.T) {
		r := upload(t, s, rootAuth, "pve1", "local", field("content", "vztmpl"), filePart("filename", "oci.tar", []byte("x")))
		if r.code != 400 || r.errs()["filename"] != "wrong file extension" {
			t.Fatalf("%v", r)
		}
	})
}

// TestLXCControlCharacters: env and entrypoint take no control characters
// but the tab (Config.pm's \x0a-\x1F), at create and in PUT config.
func TestLXCControlCharacters(t *testing.T) {
	s := newSim(t, Options{})
	deb := putTemplate(t, s, "", "shared", "d.tar.zst", debianFiles())
	_, st := createCT(t, s, rootAuth, "pve1", url.Values{"vmid": {"100"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("%v", st)
	}
	cases := []struct {
		key, value string
		ok         bool
	}{
		{"env", "A=x\ny", false},
		{"env", "A=x\x0by", false},
		{"env", "A=x\x1fy", false},
		{"env", "A=x\x00B=y\rz", false},
		{"env", "A=x\ty", true},
		{"env", "A=x\x00B=two words", true},
		{"env", "A=é", true},
		{"entrypoint", "/app\n--serve", false},
		{"entrypoint", "/app\x10", false},
		{"entrypoint", "/app\t--serve", true},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s %q", tc.key, tc.value), func(t *testing.T) {
			r := api(t, s, rootAuth, "PUT", "/nodes/pve1/lxc/100/config", url.Values{tc.key: {tc.value}})
			if tc.ok {
				mustOK(t, r)
				if ct, _ := s.Container("pve1", 100); ct.Config[tc.key] != tc.value {
					t.Fatalf("config %s = %q", tc.key, ct.Config[tc.key])
				}
				return
			}
			if r.code != 400 || r.errs()[tc.key] != "value does not match the regex pattern" {
				t.Fatalf("PUT: %v", r)
			}
			r = api(t, s, rootAuth, "POST", "/nodes/pve1/lxc", url.Values{"vmid": {"101"}, "ostemplate": {deb}, tc.key: {tc.value}})
			if r.code != 400 || r.errs()[tc.key] != "value does not match the regex pattern" {
				t.Fatalf("create: %v", r)
			}
		})
	}
}

// TestLXCInterfaces: without RealLXC the interfaces come from the config;
// a stopped or unknown container is null.
func TestLXCInterfaces(t *testing.T) {
	s := newSim(t, Options{})
	deb := putTemplate(t, s, "", "shared", "d.tar.zst", debianFiles())
	_, st := createCT(t, s, rootAuth, "pve1", url.Values{"vmid": {"100"}, "ostemplate": {deb}, "rootfs": {"local-lvm:1"},
		"net0": {"name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,host-managed=1,ip=10.0.0.5/24,gw=10.0.0.1,ip6=fd00::5/64"},
		"net1": {"name=eth1,bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=dhcp"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("%v", st)
	}
	get := func(a auth, path string) reply { return api(t, s, a, "GET", path, nil) }
	for _, path := range []string{"/nodes/pve1/lxc/100/interfaces", "/nodes/pve1/lxc/999/interfaces", "/nodes/pve2/lxc/100/interfaces"} {
		if r := mustOK(t, get(rootAuth, path)); r.body != `{"data":null}` {
			t.Errorf("%s: %v", path, r)
		}
	}
	s.AddToken(Token{ID: "ro@pve!t", Secret: "x", Privs: []string{"Datastore.Audit"}})
	if r := get(tokenAuth("ro@pve!t", "x"), "/nodes/pve1/lxc/100/interfaces"); r.code != 403 || r.reason != "Permission check failed (/vms/100, VM.Audit)" {
		t.Fatalf("without VM.Audit: %v", r)
	}
	r := mustOK(t, api(t, s, rootAuth, "POST", "/nodes/pve1/lxc/100/status/start", nil))
	if st := waitTask(t, s, r.str()); st["exitstatus"] != "OK" {
		t.Fatalf("start: %v", st)
	}
	got := mustOK(t, get(rootAuth, "/nodes/pve1/lxc/100/interfaces")).body
	want := `{"data":[` +
		`{"hardware-address":"00:00:00:00:00:00","hwaddr":"00:00:00:00:00:00","inet":"127.0.0.1/8","inet6":"::1/128","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"inet","prefix":8},{"ip-address":"::1","ip-address-type":"inet6","prefix":128}],"name":"lo"},` +
		`{"hardware-address":"bc:24:11:00:00:01","hwaddr":"bc:24:11:00:00:01","inet":"10.0.0.5/24","inet6":"fd00::5/64","ip-addresses":[{"ip-address":"10.0.0.5","ip-address-type":"inet","prefix":24},{"ip-address":"fd00::5","ip-address-type":"inet6","prefix":64}],"name":"eth0"},` +
		`{"hardware-address":"bc:24:11:00:00:02","hwaddr":"bc:24:11:00:00:02","ip-addresses":[],"name":"eth1"}]}`
	if got != want {
		t.Fatalf("interfaces\n got %s\nwant %s", got, want)
	}
}
