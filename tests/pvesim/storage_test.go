package pvesim

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStorageList(t *testing.T) {
	s := newSim(t, Options{})
	cases := []struct {
		node, content string
		want          []string
	}{
		{"pve1", "", []string{"local", "local-lvm", "shared"}},
		{"pve2", "vztmpl", []string{"local", "shared"}},
		{"pve1", "rootdir", []string{"local-lvm", "shared"}},
		{"pve1", "iso,images", []string{"local", "local-lvm"}},
	}
	for _, tc := range cases {
		t.Run(tc.node+"/"+tc.content, func(t *testing.T) {
			q := url.Values{}
			if tc.content != "" {
				q.Set("content", tc.content)
			}
			var got []string
			for _, st := range mustOK(t, api(t, s, rootAuth, "GET", "/nodes/"+tc.node+"/storage", q)).list() {
				got = append(got, st["storage"].(string))
				if st["active"] != 1.0 || st["enabled"] != 1.0 {
					t.Errorf("%v", st)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	st := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/storage/shared/status", nil)).obj()
	if st["type"] != "nfs" || st["shared"] != 1.0 || st["content"] != "rootdir,vztmpl" || st["total"].(float64) <= 0 {
		t.Fatalf("status %v", st)
	}
	st = mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve2/storage/local/status", nil)).obj()
	if st["type"] != "dir" || st["shared"] != 0.0 || st["content"] != "backup,iso,vztmpl" {
		t.Fatalf("status %v", st)
	}
	if r := api(t, s, rootAuth, "GET", "/nodes/pve1/storage/nope/status", nil); r.code != 400 || r.errs()["storage"] != "No such storage." {
		t.Fatalf("unknown storage: %v", r)
	}
	// Only storages the user may see.
	s.AddToken(Token{ID: "a@pve!t", Secret: "x", Privs: []string{"VM.Audit"}})
	if l := mustOK(t, api(t, s, tokenAuth("a@pve!t", "x"), "GET", "/nodes/pve1/storage", nil)).list(); len(l) != 0 {
		t.Fatalf("storages without Datastore.Audit: %v", l)
	}
}

func TestSharedStorage(t *testing.T) {
	s := newSim(t, Options{})
	r := mustOK(t, upload(t, s, rootAuth, "pve1", "shared", field("content", "vztmpl"), filePart("filename", "both.tar.zst", []byte("x"))))
	waitTask(t, s, r.str())
	for _, node := range []string{"pve1", "pve2"} {
		l := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/"+node+"/storage/shared/content", url.Values{"content": {"vztmpl"}})).list()
		if len(l) != 1 || l[0]["volid"] != "shared:vztmpl/both.tar.zst" {
			t.Fatalf("%s: %v", node, l)
		}
		if l := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/"+node+"/storage/local/content", nil)).list(); len(l) != 0 {
			t.Fatalf("%s local: %v", node, l)
		}
	}
	if s.StoragePath("pve1", "shared") != s.StoragePath("pve2", "shared") || s.StoragePath("pve1", "local") == s.StoragePath("pve2", "local") {
		t.Fatal("storage paths")
	}
}

func TestContent(t *testing.T) {
	s := newSim(t, Options{})
	cache := filepath.Join(s.StoragePath("pve1", "local"), "template", "cache")
	for _, n := range []string{"b.tar.zst", "A.tar.gz", "c.tar", "d.tar.xz", "e.tar.bz2", "notes.txt", "f.TAR"} {
		os.WriteFile(filepath.Join(cache, n), []byte("data of "+n), 0o644)
	}
	os.Mkdir(filepath.Join(cache, "dir.tar.gz"), 0o755)

	t.Run("list", func(t *testing.T) {
		l := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/storage/local/content", url.Values{"content": {"vztmpl"}})).list()
		var got []string
		for _, it := range l {
			got = append(got, it["volid"].(string)+"="+it["format"].(string))
			if it["content"] != "vztmpl" || it["size"].(float64) <= 0 || it["ctime"].(float64) <= 0 {
				t.Errorf("%v", it)
			}
		}
		// Sorted case-insensitively; "f.TAR" gets Perl's
		// `$2 eq 'tar' ? $2 : "t$2"`.
		want := "local:vztmpl/A.tar.gz=tgz local:vztmpl/b.tar.zst=tzst local:vztmpl/c.tar=tar local:vztmpl/d.tar.xz=txz local:vztmpl/e.tar.bz2=tbz2 local:vztmpl/f.TAR=tTAR"
		if strings.Join(got, " ") != want {
			t.Fatalf("got  %v\nwant %v", strings.Join(got, " "), want)
		}
	})
	t.Run("get", func(t *testing.T) {
		for _, vol := range []string{"local:vztmpl/b.tar.zst", url.PathEscape("local:vztmpl/b.tar.zst"), "vztmpl/b.tar.zst"} {
			r := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/storage/local/content/"+vol, nil))
			d := r.obj()
			if d["path"] != filepath.Join(cache, "b.tar.zst") || d["size"] != float64(len("data of b.tar.zst")) || d["format"] != "raw" {
				t.Fatalf("%s: %v", vol, d)
			}
		}
		cases := []struct{ vol, reason string }{
			{"local:vztmpl/missing.tar.zst", "volume_size_info on 'local:vztmpl/missing.tar.zst' failed - no format"},
			{"local:vztmpl/notes.txt", "unable to parse directory volume name 'vztmpl/notes.txt'"},
			{"shared:vztmpl/b.tar.zst", "Parameter verification failed."},
		}
		for _, tc := range cases {
			r := api(t, s, rootAuth, "GET", "/nodes/pve1/storage/local/content/"+tc.vol, nil)
			if r.reason != tc.reason {
				t.Errorf("%s: %v", tc.vol, r)
			}
		}
	})
	t.Run("delete", func(t *testing.T) {
		s.AddToken(Token{ID: "ci@pve!up", Secret: "x", Privs: []string{"Datastore.AllocateTemplate", "Datastore.Audit"}})
		r := api(t, s, tokenAuth("ci@pve!up", "x"), "DELETE", "/nodes/pve1/storage/local/content/local:vztmpl/b.tar.zst", nil)
		if r.code != 403 || r.reason != "Permission check failed (/storage/local, Datastore.Allocate)" {
			t.Fatalf("without Datastore.Allocate: %v", r)
		}
		r = mustOK(t, api(t, s, rootAuth, "DELETE", "/nodes/pve1/storage/local/content/local:vztmpl/b.tar.zst", nil))
		if !strings.Contains(r.str(), ":imgdel:local:root@pam!test:") {
			t.Fatalf("UPID %s", r.str())
		}
		if st := waitTask(t, s, r.str()); st["exitstatus"] != "OK" {
			t.Fatalf("%v", st)
		}
		if _, err := os.Stat(filepath.Join(cache, "b.tar.zst")); err == nil {
			t.Fatal("not removed")
		}
		// Deleting it again only warns (Plugin.pm free_image).
		r = mustOK(t, api(t, s, rootAuth, "DELETE", "/nodes/pve1/storage/local/content/local:vztmpl/b.tar.zst", nil))
		if st := waitTask(t, s, r.str()); st["exitstatus"] != "WARNINGS: 1" {
			t.Fatalf("%v", st)
		}
		if log := taskLogText(t, s, r.str()); !strings.Contains(log, "WARN: disk image '"+filepath.Join(cache, "b.tar.zst")+"' does not exist") {
			t.Fatalf("log:\n%s", log)
		}
		// delay: null when the task finished in time.
		r = mustOK(t, api(t, s, rootAuth, "DELETE", "/nodes/pve1/storage/local/content/local:vztmpl/c.tar", url.Values{"delay": {"5"}}))
		if r.data() != nil {
			t.Fatalf("with delay: %v", r)
		}
	})
}

func TestTasks(t *testing.T) {
	s := newSim(t, Options{})
	r := mustOK(t, upload(t, s, rootAuth, "pve1", "local", field("content", "vztmpl"), filePart("filename", "t.tar", []byte("x"))))
	upid := r.str()
	st := waitTask(t, s, upid)
	for k, want := range map[string]any{"node": "pve1", "type": "imgcopy", "id": "", "user": "root@pam", "tokenid": "test", "upid": upid, "exitstatus": "OK"} {
		if st[k] != want {
			t.Errorf("%s = %v, want %v", k, st[k], want)
		}
	}
	for _, k := range []string{"pid", "pstart", "starttime"} {
		if _, ok := st[k].(float64); !ok {
			t.Errorf("%s = %v", k, st[k])
		}
	}
	t.Run("log paging", func(t *testing.T) {
		all := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/tasks/"+upid+"/log", nil))
		n := len(all.list())
		if total := all.json["total"]; total != float64(n) || n < 5 {
			t.Fatalf("total %v, lines %d", total, n)
		}
		page := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/tasks/"+upid+"/log", url.Values{"start": {"2"}, "limit": {"2"}})).list()
		if len(page) != 2 || page[0]["n"] != 3.0 || page[1]["n"] != 4.0 {
			t.Fatalf("page %v", page)
		}
		if last := all.list()[n-1]; last["t"] != "TASK OK" {
			t.Fatalf("last line %v", last)
		}
	})
	t.Run("log on the wrong node", func(t *testing.T) {
		l := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve2/tasks/"+upid+"/log", nil)).list()
		if len(l) != 1 || l[0]["t"] != "unable to open file - No such file or directory" {
			t.Fatalf("%v", l)
		}
	})
	cases := []struct {
		name, method, path string
		code               int
		errKey, errMsg     string
	}{
		{"status on the wrong node", "GET", "/nodes/pve2/tasks/" + upid + "/status", 400, "upid", "no such task"},
		{"bad UPID", "GET", "/nodes/pve1/tasks/UPID:nonsense/status", 400, "upid", "unable to parse worker upid"},
		{"unknown UPID", "GET", "/nodes/pve1/tasks/" + strings.Replace(upid, ":imgcopy:", ":vzcreate:", 1) + "/status", 400, "upid", "no such task"},
		{"stop on the wrong node", "DELETE", "/nodes/pve2/tasks/" + upid, 400, "upid", "no such task"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := api(t, s, rootAuth, tc.method, tc.path, nil)
			if r.code != tc.code || r.errs()[tc.errKey] != tc.errMsg {
				t.Fatalf("got %v", r)
			}
		})
	}
	t.Run("other users need Sys.Audit", func(t *testing.T) {
		s.AddToken(Token{ID: "u@pve!t", Secret: "x", Privs: []string{"VM.Audit"}})
		r := api(t, s, tokenAuth("u@pve!t", "x"), "GET", "/nodes/pve1/tasks/"+upid+"/status", nil)
		if r.code != 403 || r.reason != "Permission check failed (/nodes/pve1, Sys.Audit)" {
			t.Fatalf("%v", r)
		}
		s.AddToken(Token{ID: "v@pve!t", Secret: "x", Privs: []string{"Sys.Audit"}})
		mustOK(t, api(t, s, tokenAuth("v@pve!t", "x"), "GET", "/nodes/pve1/tasks/"+upid+"/status", nil))
	})
	t.Run("stop a running task", func(t *testing.T) {
		release := make(chan struct{})
		upid := s.startWorker("pve1", "test", "", newPrincipal("root@pam!test", true, nil), func(w *worker) error {
			<-w.ctx.Done()
			close(release)
			return w.interrupted()
		})
		if st := mustOK(t, api(t, s, rootAuth, "GET", "/nodes/pve1/tasks/"+upid+"/status", nil)).obj(); st["status"] != "running" || st["exitstatus"] != nil {
			t.Fatalf("%v", st)
		}
		mustOK(t, api(t, s, rootAuth, "DELETE", "/nodes/pve1/tasks/"+upid, nil))
		<-release
		if st := waitTask(t, s, upid); st["exitstatus"] != "received interrupt" {
			t.Fatalf("%v", st)
		}
	})
	t.Run("FailNextTask", func(t *testing.T) {
		s.FailNextTask("imgcopy", "disk full")
		r := mustOK(t, upload(t, s, rootAuth, "pve1", "local", field("content", "vztmpl"), filePart("filename", "f.tar", []byte("xyz"))))
		if st := waitTask(t, s, r.str()); st["exitstatus"] != "disk full" {
			t.Fatalf("%v", st)
		}
		if _, err := os.Stat(filepath.Join(s.StoragePath("pve1", "local"), "template", "cache", "f.tar")); err == nil {
			t.Fatal("half-copied file left")
		}
		// Only once.
		r = mustOK(t, upload(t, s, rootAuth, "pve1", "local", field("content", "vztmpl"), filePart("filename", "f.tar", []byte("xyz"))))
		if st := waitTask(t, s, r.str()); st["exitstatus"] != "OK" {
			t.Fatalf("%v", st)
		}
	})
}
