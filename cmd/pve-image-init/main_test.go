package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pve-image/pve-image/imgconv/runspec"
)

func TestApplyOverrides(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n# comment\nwww-data:x:33:33:www:/var/www:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nwww-data:x:33:\nstaff:x:50:app,www-data\napp:x:1000:\nvideo:x:44:app\n"), 0o644)
	image := func(env ...string) *runspec.Spec {
		return &runspec.Spec{Args: []string{"/app"}, UID: 0, GID: 0, Groups: []uint32{7}, Home: "/root", WorkingDir: "/",
			Env: append([]string{"PATH=/bin", "HOME=/root"}, env...)}
	}
	tests := []struct {
		name      string
		spec      *runspec.Spec
		uid, gid  uint32
		groups    []uint32
		env       []string
		wd        string
		args      []string
		wantError bool
	}{
		{name: "no overrides", spec: image(), gid: 0, groups: []uint32{7}, env: []string{"PATH=/bin", "HOME=/root"}, wd: "/"},
		{name: "uid in passwd", spec: image("PVE_IMAGE_UID=1000"), uid: 1000, gid: 1000, groups: []uint32{50, 44}, env: []string{"PATH=/bin", "HOME=/home/app"}, wd: "/"},
		{name: "uid and gid", spec: image("PVE_IMAGE_UID=33", "PVE_IMAGE_GID=7"), uid: 33, gid: 7, env: []string{"PATH=/bin", "HOME=/var/www"}, wd: "/"},
		{name: "gid before uid", spec: image("PVE_IMAGE_GID=7", "PVE_IMAGE_UID=33"), uid: 33, gid: 7, env: []string{"PATH=/bin", "HOME=/var/www"}, wd: "/"},
		{name: "uid not in passwd", spec: image("PVE_IMAGE_UID=4242"), uid: 4242, gid: 0, env: []string{"PATH=/bin", "HOME=/"}, wd: "/"},
		{name: "gid alone", spec: image("PVE_IMAGE_GID=5"), gid: 5, groups: []uint32{7}, env: []string{"PATH=/bin", "HOME=/root"}, wd: "/"},
		{name: "cwd", spec: image("PVE_IMAGE_CWD=/srv"), groups: []uint32{7}, env: []string{"PATH=/bin", "HOME=/root"}, wd: "/srv"},
		{name: "a HOME the image set stays", spec: &runspec.Spec{Args: []string{"/app"}, Env: []string{"HOME=/data", "PVE_IMAGE_UID=33"}},
			uid: 33, gid: 33, groups: []uint32{50}, env: []string{"HOME=/data"}},
		{name: "a HOME the pod set stays", spec: &runspec.Spec{Args: []string{"/app"}, Home: "/root", Env: []string{"HOME=/pod", "PVE_IMAGE_UID=33"}},
			uid: 33, gid: 33, groups: []uint32{50}, env: []string{"HOME=/pod"}},
		{name: "user by name", spec: image("PVE_IMAGE_USER=app"), uid: 1000, gid: 1000, groups: []uint32{50, 44}, env: []string{"PATH=/bin", "HOME=/home/app"}, wd: "/"},
		{name: "user by name and gid", spec: image("PVE_IMAGE_USER=www-data", "PVE_IMAGE_GID=7"), uid: 33, gid: 7, env: []string{"PATH=/bin", "HOME=/var/www"}, wd: "/"},
		{name: "unknown user name", spec: image("PVE_IMAGE_USER=nobody"), wantError: true},
		{name: "supplemental groups on top", spec: image("PVE_IMAGE_UID=1000", "PVE_IMAGE_GROUPS=2000,44"), uid: 1000, gid: 1000, groups: []uint32{50, 44, 2000}, env: []string{"PATH=/bin", "HOME=/home/app"}, wd: "/"},
		{name: "argv and variables with newlines", spec: image(`PVE_IMAGE_ARGV=["sh","-c","echo \"a b\"\nexit 3"]`, `PVE_IMAGE_ENV=["CERT=line1\nline2","PATH=/usr/bin"]`),
			args: []string{"sh", "-c", "echo \"a b\"\nexit 3"}, groups: []uint32{7}, env: []string{"PATH=/usr/bin", "HOME=/root", "CERT=line1\nline2"}, wd: "/"},
		{name: "the program never sees PVE_IMAGE_ variables", spec: image("PVE_IMAGE_SUPERVISED=1", "PVE_IMAGE_NET=host", "PVE_IMAGE_TERMINATION_LOG=/dev/termination-log", `PVE_IMAGE_ENV=["PVE_IMAGE_X=1"]`),
			groups: []uint32{7}, env: []string{"PATH=/bin", "HOME=/root"}, wd: "/"},
		{name: "bad uid", spec: image("PVE_IMAGE_UID=x"), wantError: true},
		{name: "bad gid", spec: image("PVE_IMAGE_GID=-1"), wantError: true},
		{name: "bad argv", spec: image("PVE_IMAGE_ARGV=sh -c x"), wantError: true},
		{name: "empty argv", spec: image("PVE_IMAGE_ARGV=[]"), wantError: true},
		{name: "bad groups", spec: image("PVE_IMAGE_GROUPS=a"), wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, err := takeRuntimeEnv(tt.spec)
			if err == nil {
				err = applyOverrides(tt.spec, rt, root)
			}
			if tt.wantError {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := tt.spec
			if s.UID != tt.uid || s.GID != tt.gid || !reflect.DeepEqual(s.Groups, tt.groups) || !reflect.DeepEqual(s.Env, tt.env) || s.WorkingDir != tt.wd {
				t.Errorf("got uid %d gid %d groups %v env %q cwd %q", s.UID, s.GID, s.Groups, s.Env, s.WorkingDir)
			}
			want := tt.args
			if want == nil {
				want = []string{"/app"}
			}
			if !reflect.DeepEqual(s.Args, want) {
				t.Errorf("args %q, want %q", s.Args, want)
			}
		})
	}
}

// TestTakeRuntimeEnvReadsAll: a bad variable is reported, but what comes
// after it is still read — supervision above all, so that the failure
// reaches the runtime as an exit status.
func TestTakeRuntimeEnvReadsAll(t *testing.T) {
	spec := &runspec.Spec{Args: []string{"/app"}, Env: []string{"PVE_IMAGE_ARGV=[oops", "PVE_IMAGE_CAP_DROP=NET_RAW,cap_sys_admin", "PVE_IMAGE_NO_NEW_PRIVS=1",
		"PVE_IMAGE_READONLY_ROOT=1", "PVE_IMAGE_SUPERVISED=1", "A=1"}}
	rt, err := takeRuntimeEnv(spec)
	if err == nil || !strings.Contains(err.Error(), "PVE_IMAGE_ARGV") {
		t.Errorf("error %v", err)
	}
	if !rt.supervised || !rt.noNewPrivs || !rt.readonlyRoot || !reflect.DeepEqual(rt.capDrop, []int{13, 21}) {
		t.Errorf("read %+v", rt)
	}
	if !spec.NoNewPrivs || !reflect.DeepEqual(spec.CapDrop, []int{13, 21}) || !reflect.DeepEqual(spec.Env, []string{"A=1"}) {
		t.Errorf("spec %+v", spec)
	}
	if _, err := takeRuntimeEnv(&runspec.Spec{Env: []string{"PVE_IMAGE_CAP_DROP=NET_FLY"}}); err == nil {
		t.Error("an unknown capability was taken")
	}
	if got := dropRuntimeVars([]string{"PVE_IMAGE_UID=0", "PATH=/bin", "PVE_IMAGE_SUPERVISED=1"}); !reflect.DeepEqual(got, []string{"PATH=/bin"}) {
		t.Errorf("dropRuntimeVars = %q", got)
	}
}
