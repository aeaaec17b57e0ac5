package imgconv

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const passwd = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\napp:x:1000:1000::/home/app:/bin/sh\n"
const group = "root:x:0:\nwww-data:x:33:\nstaff:x:50:app,www-data\napp:x:1000:\naudio:x:29:app\n"

func TestResolveUser(t *testing.T) {
	withDB := []te{file("etc/passwd", passwd), file("etc/group", group)}
	tests := []struct {
		files []te
		spec  string
		want  User
		err   string
	}{
		{withDB, "", User{Name: "root", Home: "/root"}, ""},
		{withDB, "app", User{Name: "app", UID: 1000, GID: 1000, Groups: []uint32{50, 29}, Home: "/home/app"}, ""},
		{withDB, "1000", User{Name: "app", UID: 1000, GID: 1000, Groups: []uint32{50, 29}, Home: "/home/app"}, ""},
		{withDB, "app:staff", User{Name: "app", UID: 1000, GID: 50, Home: "/home/app"}, ""},
		{withDB, "www-data:7", User{Name: "www-data", UID: 33, GID: 7, Home: "/var/www"}, ""},
		{withDB, "4242", User{UID: 4242, Home: "/"}, ""},
		{withDB, "4242:4343", User{UID: 4242, GID: 4343, Home: "/"}, ""},
		{withDB, "nobody", User{}, `user "nobody": not found in the image`},
		{withDB, "app:wheel", User{}, `group "wheel": not found`},
		{[]te{file("app", "x")}, "65532:65532", User{UID: 65532, GID: 65532, Home: "/"}, ""},
		{[]te{file("app", "x")}, "nonroot", User{}, "not found"},
	}
	for _, tc := range tests {
		r, err := flatten(t, Options{FactsOnly: true}, gzLayer(t, tc.files...))
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.ResolveUser(tc.spec)
		r.Close()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrUnknownUser) {
				t.Errorf("ResolveUser(%q) error %v, want %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil || got.Name != tc.want.Name || got.UID != tc.want.UID || got.GID != tc.want.GID || got.Home != tc.want.Home || !slices.Equal(got.Groups, tc.want.Groups) {
			t.Errorf("ResolveUser(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	busybox := []te{te{Name: "bin/busybox", Body: elfHeader(0x3e, 2), Mode: 0o755}, symlink("sbin/init", "/bin/busybox")}
	systemd := []te{te{Name: "usr/lib/systemd/systemd", Body: elfHeader(0x3e, 2), Mode: 0o755}, symlink("sbin/init", "../usr/lib/systemd/systemd")}
	tests := []struct {
		name       string
		files      []te
		ep, cmd    []string
		system     bool
		initSystem string
	}{
		{"app with busybox init installed", busybox, nil, []string{"nginx", "-g", "daemon off;"}, false, "busybox"},
		{"busybox init as command", busybox, []string{"/sbin/init"}, nil, true, "busybox"},
		{"no command, has init", systemd, nil, nil, true, "systemd"},
		{"command names the init's target", systemd, []string{"/usr/lib/systemd/systemd"}, nil, true, "systemd"},
		{"distroless", []te{te{Name: "app", Body: "x", Mode: 0o755}}, []string{"/app"}, nil, false, ""},
		{"nothing to run", []te{file("etc/x", "")}, nil, nil, false, ""},
	}
	for _, tc := range tests {
		r, err := flatten(t, Options{FactsOnly: true}, gzLayer(t, tc.files...))
		if err != nil {
			t.Fatal(err)
		}
		k := r.Classify(tc.ep, tc.cmd)
		r.Close()
		if k.System != tc.system || k.InitSystem != tc.initSystem || k.Reason == "" {
			t.Errorf("%s: %+v", tc.name, k)
		}
	}
}

// AddFile and Move follow symlinked directories the way a process in the
// container would. Changing what a streamed write already wrote is
// ErrRestart.
func TestAddFileAndMove(t *testing.T) {
	for _, stream := range []int{-1, 1} {
		r, err := flatten(t, Options{Stream: stream}, gzLayer(t, dir("usr/sbin/"), symlink("sbin", "usr/sbin"),
			te{Name: "usr/sbin/realinit", Body: "init", Mode: 0o755}, symlink("usr/sbin/init", "realinit"), symlink("etc", "/private/etc"), dir("private/etc/")))
		if err != nil {
			t.Fatal(err)
		}
		tw := r.NewTarWriter(&strings.Builder{})
		if err := tw.Stream(context.Background()); err != nil {
			t.Fatal(err)
		}
		now := time.Unix(0, 0)
		if stream > 0 {
			if err := r.Move("/sbin/init", "/sbin/init.image"); !errors.Is(err, ErrRestart) {
				t.Errorf("moving a written entry: %v, want ErrRestart", err)
			}
			r.Close()
			continue
		}
		for _, step := range []error{
			r.AddFile("/sbin/pve-image-init", 0o755, 0, 0, now, []byte("shim")),
			r.Move("/sbin/init", "/sbin/init.image"),
			r.AddSymlink("/sbin/init", "pve-image-init", now),
			r.AddFile("/etc/pve-image/run.json", 0o644, 0, 0, now, []byte("{}")),
		} {
			if errors.Is(step, ErrRestart) {
				t.Fatalf("stream %d: restart", stream)
			}
			if step != nil {
				t.Fatal(step)
			}
		}
		for p, want := range map[string]string{"usr/sbin/pve-image-init": "shim", "private/etc/pve-image/run.json": "{}"} {
			if n := r.tree.lookup(p); n == nil || string(n.ino.data) != want {
				t.Errorf("stream %d: %s missing", stream, p)
			}
		}
		if n := r.tree.lookup("usr/sbin/init"); n == nil || n.ino.target != "pve-image-init" {
			t.Errorf("stream %d: /sbin/init is not the shim link", stream)
		}
		if n := r.tree.lookup("usr/sbin/init.image"); n == nil || n.ino.target != "realinit" {
			t.Errorf("stream %d: the image's init was not kept", stream)
		}
		if err := r.AddFile("/usr/sbin/realinit/x", 0o644, 0, 0, now, nil); !errors.Is(err, ErrNotDir) {
			t.Errorf("adding below a file: %v", err)
		}
		r.Close()
	}
}
