package pvesim

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestUploadParser replays the orders of multipart fields that
// pve-http-server's order-sensitive parser accepts and refuses.
func TestUploadParser(t *testing.T) {
	s := newSim(t, Options{})
	data := randomBytes(300 << 10)
	sum := sha256hex(data)
	content := field("content", "vztmpl")
	alg := field("checksum-algorithm", "sha256")
	cs := field("checksum", sum)
	file := filePart("filename", "app.tar.zst", data)
	uploadFailed := "upload failed at /usr/share/perl5/PVE/APIServer/AnyEvent.pm line 1370."

	cases := []struct {
		name       string
		query      string
		parts      []part
		wantCode   int
		wantReason string // "" means "Bad Request" with an empty body for 400
		wantErrs   map[string]string
		stored     string // file name expected in template/cache
	}{
		{name: "content, algorithm, checksum, file", parts: []part{content, alg, cs, file}, wantCode: 200, stored: "app.tar.zst"},
		{name: "content and file", parts: []part{content, file}, wantCode: 200, stored: "app.tar.zst"},
		{name: "content in the query", query: "content=vztmpl", parts: []part{file}, wantCode: 200, stored: "app.tar.zst"},
		{name: "content, checksum only (validation)", parts: []part{content, cs, file}, wantCode: 400,
			wantReason: "Parameter verification failed.", wantErrs: map[string]string{"checksum-algorithm": "missing property required by 'checksum'"}},
		{name: "checksum before algorithm", parts: []part{content, cs, alg, file}, wantCode: 400},
		{name: "algorithm before content", parts: []part{alg, content, cs, file}, wantCode: 400},
		{name: "checksum first", parts: []part{cs, alg, content, file}, wantCode: 400},
		// An unknown field's part is swallowed by the file part's
		// pattern; the name it yields spans lines: empty 400 too.
		{name: "extra field before the file", parts: []part{content, field("node", "pve1"), file}, wantCode: 400},
		{name: "extra field first", parts: []part{field("foo", "bar"), content, file}, wantCode: 400},
		{name: "filename as a text field (go-proxmox < 0.6)", parts: []part{content, field("filename", "app.tar.zst"), file}, wantCode: 400},
		{name: "file part not named filename", parts: []part{content, filePart("file", "app.tar.zst", data)}, wantCode: 500,
			wantReason: "wrong field name 'file' for file upload, expected 'filename' at /usr/share/perl5/PVE/APIServer/AnyEvent.pm line 1325."},
		{name: "Content-Type before Content-Disposition", parts: []part{content, {headers: []string{
			"Content-Type: application/octet-stream", `Content-Disposition: form-data; name="filename"; filename="app.tar.zst"`}, body: data}},
			wantCode: 500, wantReason: uploadFailed},
		{name: "file part without filename", parts: []part{content, field("filename", "just text")}, wantCode: 500, wantReason: uploadFailed},
		{name: "no content", parts: []part{file}, wantCode: 400, wantReason: "Parameter verification failed.",
			wantErrs: map[string]string{"content": "property is missing and it is not optional"}},
		{name: "wrong extension", parts: []part{content, filePart("filename", "app.tar.lz4", data)}, wantCode: 400,
			wantReason: "Parameter verification failed.", wantErrs: map[string]string{"filename": "wrong file extension"}},
		{name: "zip is no template", parts: []part{content, filePart("filename", "app.zip", data)}, wantCode: 400,
			wantReason: "Parameter verification failed.", wantErrs: map[string]string{"filename": "wrong file extension"}},
		{name: "unknown algorithm", parts: []part{content, field("checksum-algorithm", "crc32"), cs, file}, wantCode: 400,
			wantReason: "Parameter verification failed.", wantErrs: map[string]string{"checksum-algorithm": "value 'crc32' does not have a value in the enumeration 'md5, sha1, sha224, sha256, sha384, sha512'"}},
		{name: "name normalised", parts: []part{content, filePart("filename", `C:\Users\me\my app ü.TAR.GZ`, data)}, wantCode: 200, stored: "my_app___.TAR.GZ"},
		{name: "plain tar", parts: []part{content, filePart("filename", "oci.tar", data)}, wantCode: 200, stored: "oci.tar"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cache := filepath.Join(s.StoragePath("pve1", "local"), "template", "cache")
			os.RemoveAll(cache)
			os.MkdirAll(cache, 0o755)
			before := s.Uploads()
			r := do(t, uploadRequest(t, s, "pve1", "local", tc.query, multipartBody(tc.parts...)), rootAuth)
			if r.code != tc.wantCode {
				t.Fatalf("got %v, want %d", r, tc.wantCode)
			}
			switch {
			case tc.wantCode == 400 && tc.wantReason == "":
				if r.reason != "Bad Request" || r.body != "" {
					t.Fatalf("want an empty 400 Bad Request, got %q %q", r.reason, r.body)
				}
			case tc.wantReason != "" && r.reason != tc.wantReason:
				t.Fatalf("reason %q, want %q", r.reason, tc.wantReason)
			}
			for k, v := range tc.wantErrs {
				if r.errs()[k] != v {
					t.Errorf("errors[%s] = %v, want %q (%s)", k, r.errs()[k], v, r.body)
				}
			}
			if tc.stored == "" {
				ents, _ := os.ReadDir(cache)
				if len(ents) != 0 {
					t.Errorf("something was stored: %v", ents)
				}
				return
			}
			if s.Uploads() != before+1 {
				t.Errorf("Uploads() = %d, want %d", s.Uploads(), before+1)
			}
			st := waitTask(t, s, r.str())
			if st["exitstatus"] != "OK" || st["type"] != "imgcopy" || st["id"] != "" {
				t.Fatalf("task %v\n%s", st, taskLogText(t, s, r.str()))
			}
			got, err := os.ReadFile(filepath.Join(cache, tc.stored))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("stored file %s: %v (equal %v)", tc.stored, err, bytes.Equal(got, data))
			}
		})
	}
}

func TestUploadTaskLog(t *testing.T) {
	s := newSim(t, Options{})
	data := randomBytes(1000)
	r := mustOK(t, upload(t, s, rootAuth, "pve1", "local",
		field("content", "vztmpl"), field("checksum-algorithm", "sha256"), field("checksum", strings.ToUpper(sha256hex(data))),
		filePart("filename", "x.tar.gz", data)))
	waitTask(t, s, r.str())
	log := taskLogText(t, s, r.str())
	for _, want := range []string{
		"starting file import from: " + filepath.Join(s.dir, "pve1", "tmp", "pveupload-"),
		"calculating checksum...OK, checksum verified",
		"target node: pve1",
		"target file: " + filepath.Join(s.StoragePath("pve1", "local"), "template", "cache", "x.tar.gz"),
		"file size is: 1000",
		"command: cp -- ",
		"finished file import successfully",
		"TASK OK",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	// The temporary file is gone once the worker is done.
	tmps, _ := filepath.Glob(filepath.Join(s.dir, "pve1", "tmp", "pveupload-*"))
	if len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
}

func TestUploadChecksumMismatch(t *testing.T) {
	s := newSim(t, Options{})
	data := randomBytes(4096)
	cases := []struct {
		name    string
		sum     string
		corrupt bool
	}{
		{"wrong checksum", sha256hex([]byte("other")), false},
		{"corrupted in transit", sha256hex(data), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.corrupt {
				s.CorruptNextUpload()
			}
			r := mustOK(t, upload(t, s, rootAuth, "pve1", "local",
				field("content", "vztmpl"), field("checksum-algorithm", "sha256"), field("checksum", tc.sum),
				filePart("filename", "bad.tar.zst", data)))
			st := waitTask(t, s, r.str())
			exit, _ := st["exitstatus"].(string)
			if !strings.HasPrefix(exit, "checksum mismatch: got '") || !strings.HasSuffix(exit, "' != expect '"+tc.sum+"'") {
				t.Fatalf("exitstatus %q", exit)
			}
			if _, err := os.Stat(filepath.Join(s.StoragePath("pve1", "local"), "template", "cache", "bad.tar.zst")); err == nil {
				t.Fatal("file stored despite the mismatch")
			}
			log := taskLogText(t, s, r.str())
			if !strings.Contains(log, "calculating checksum...\nTASK ERROR: checksum mismatch") {
				t.Errorf("log:\n%s", log)
			}
		})
	}
}

func TestUploadTransport(t *testing.T) {
	s := newSim(t, Options{})
	data := randomBytes(2 << 20)
	body := multipartBody(field("content", "vztmpl"), filePart("filename", "big.tar.zst", data))

	t.Run("chunked", func(t *testing.T) {
		req := uploadRequest(t, s, "pve1", "local", "", nil)
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = -1 // unknown: Go sends it chunked
		r := do(t, req, rootAuth)
		if r.code != 501 || r.reason != "chunked transfer encoding not supported" {
			t.Fatalf("got %v", r)
		}
	})
	t.Run("no body", func(t *testing.T) {
		r := do(t, uploadRequest(t, s, "pve1", "local", "content=vztmpl", nil), rootAuth)
		if r.code != 400 || r.errs()["filename"] != "property is missing and it is not optional" {
			t.Fatalf("got %v", r)
		}
	})
	t.Run("dropped connection", func(t *testing.T) {
		before := s.Uploads()
		s.DropNextUpload(512 << 10)
		req := uploadRequest(t, s, "pve1", "local", "", body)
		rootAuth(req)
		res, err := client().Do(req)
		if err == nil {
			res.Body.Close()
			t.Fatalf("upload succeeded: %s", res.Status)
		}
		if s.Uploads() != before {
			t.Errorf("a dropped upload counted")
		}
		tmps, _ := filepath.Glob(filepath.Join(s.dir, "pve1", "tmp", "pveupload-*"))
		if len(tmps) != 0 {
			t.Errorf("temporary file left: %v", tmps)
		}
		// Only the next upload is dropped.
		r := mustOK(t, do(t, uploadRequest(t, s, "pve1", "local", "", body), rootAuth))
		if st := waitTask(t, s, r.str()); st["exitstatus"] != "OK" {
			t.Fatalf("retry: %v", st)
		}
	})
	t.Run("permission checked before the body", func(t *testing.T) {
		s.AddToken(Token{ID: "ro@pve!t", Secret: "x", Privs: []string{"Datastore.Audit"}})
		r := do(t, uploadRequest(t, s, "pve1", "local", "", body), tokenAuth("ro@pve!t", "x"))
		if r.code != 403 || r.reason != "Permission check failed (/storage/local, Datastore.AllocateTemplate)" || r.body != "" {
			t.Fatalf("got %v", r)
		}
	})
	t.Run("ticket upload needs no CSRF token", func(t *testing.T) {
		r := mustOK(t, api(t, s, nil, "POST", "/access/ticket", map[string][]string{"username": {"root@pam"}, "password": {"rootpw"}}))
		req := uploadRequest(t, s, "pve1", "local", "", body)
		mustOK(t, do(t, req, ticketAuth(r.obj()["ticket"].(string), "")))
	})
	t.Run("wrong content type gets no answer", func(t *testing.T) {
		req := uploadRequest(t, s, "pve1", "local", "", body)
		req.Header.Set("Content-Type", "application/octet-stream")
		rootAuth(req)
		res, err := client().Do(req)
		if err == nil {
			res.Body.Close()
			t.Fatalf("got an answer: %s", res.Status)
		}
	})
}

func TestUploadStorages(t *testing.T) {
	s := newSim(t, Options{})
	data := randomBytes(1024)
	tmpl := func(name string) []part {
		return []part{field("content", "vztmpl"), filePart("filename", name, data)}
	}
	t.Run("to another node: worker on the entry node, file on the target", func(t *testing.T) {
		r := mustOK(t, upload(t, s, rootAuth, "pve2", "local", tmpl("remote.tar.xz")...))
		upid := r.str()
		if !strings.HasPrefix(upid, "UPID:pve1:") || !strings.Contains(upid, ":imgcopy::root@pam!test:") {
			t.Fatalf("UPID %s", upid)
		}
		// Polling {node} = pve2 fails: the task ran on pve1.
		wrong := api(t, s, rootAuth, "GET", "/nodes/pve2/tasks/"+upid+"/status", nil)
		if wrong.code != 400 || wrong.errs()["upid"] != "no such task" {
			t.Fatalf("status on pve2: %v", wrong)
		}
		if st := waitTask(t, s, upid); st["exitstatus"] != "OK" {
			t.Fatalf("task %v", st)
		}
		if !strings.Contains(taskLogText(t, s, upid), "command: /usr/bin/scp ") {
			t.Errorf("no scp in the log")
		}
		if _, err := os.Stat(filepath.Join(s.StoragePath("pve2", "local"), "template", "cache", "remote.tar.xz")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(s.StoragePath("pve1", "local"), "template", "cache", "remote.tar.xz")); err == nil {
			t.Fatal("also stored on pve1")
		}
	})
	t.Run("overwrite is silent", func(t *testing.T) {
		other := randomBytes(10)
		for _, d := range [][]byte{data, other} {
			r := mustOK(t, upload(t, s, rootAuth, "pve1", "local", field("content", "vztmpl"), filePart("filename", "same.tar", d)))
			waitTask(t, s, r.str())
		}
		got, _ := os.ReadFile(filepath.Join(s.StoragePath("pve1", "local"), "template", "cache", "same.tar"))
		if !bytes.Equal(got, other) {
			t.Fatal("not overwritten")
		}
	})
	cases := []struct {
		name, node, storage string
		parts               []part
		code                int
		reason              string
	}{
		{"lvm-thin holds no files", "pve1", "local-lvm", tmpl("a.tar.zst"), 500, "can't upload to storage type 'lvmthin'"},
		{"storage lacks the content", "pve1", "shared", []part{field("content", "iso"), filePart("filename", "a.iso", data)}, 500, "storage 'shared' does not support 'iso' content"},
		{"unknown storage", "pve1", "nfs9", tmpl("a.tar.zst"), 500, "storage 'nfs9' does not exist"},
		{"unknown node", "pve7", "local", tmpl("a.tar.zst"), 500, "hostname lookup 'pve7' failed - failed to get address info for: pve7: Name or service not known"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := upload(t, s, rootAuth, tc.node, tc.storage, tc.parts...)
			if r.code != tc.code || r.reason != tc.reason {
				t.Fatalf("got %v", r)
			}
		})
	}
}

// TestUploadHTTPStatusLine checks the raw status line and that the
// connection is closed after an error, as pveproxy does.
func TestUploadHTTPStatusLine(t *testing.T) {
	s := newSim(t, Options{})
	req := uploadRequest(t, s, "pve1", "local", "", multipartBody(field("content", "vztmpl"), filePart("file", "a.tar", []byte("x"))))
	rootAuth(req)
	res, err := client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if !strings.HasPrefix(res.Status, "500 wrong field name 'file'") || !res.Close {
		t.Fatalf("status %q, headers %v", res.Status, res.Header)
	}
}
