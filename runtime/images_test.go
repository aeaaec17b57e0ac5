package runtime

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/imgconv"
)

func TestParseImage(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "busybox", want: "index.docker.io/library/busybox:latest"},
		{in: "registry.k8s.io/pause:3.10", want: "registry.k8s.io/pause:3.10"},
		{in: "", bad: true},
		{in: "UPPER/case", bad: true},
		{in: "oci:/some/dir", bad: true}, // only registry references
	}
	for _, tt := range tests {
		ref, err := parseImage(tt.in)
		if tt.bad {
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("parseImage(%q): %v, want InvalidArgument", tt.in, err)
			}
			continue
		}
		if err != nil || ref.Name.Name() != tt.want {
			t.Errorf("parseImage(%q) = %q, %v; want %q", tt.in, ref.Name.Name(), err, tt.want)
		}
	}
}

func TestIsImageID(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	for in, want := range map[string]bool{"sha256:" + hex: true, hex: true, "sha256:" + hex[:63]: false, strings.ToUpper(hex): false, "busybox": false} {
		if id, ok := isImageID(in); ok != want || (ok && id != "sha256:"+hex) {
			t.Errorf("isImageID(%q) = %q, %v", in, id, ok)
		}
	}
}

func TestAuthFor(t *testing.T) {
	ref, _ := parseImage("registry.example:5000/app:1")
	b64 := base64.StdEncoding.EncodeToString([]byte("alice:s3cr:et"))
	tests := []struct {
		name string
		a    *runtimeapi.AuthConfig
		want *authn.AuthConfig
		bad  bool
	}{
		{name: "none", a: nil},
		{name: "empty", a: &runtimeapi.AuthConfig{}},
		{name: "password", a: &runtimeapi.AuthConfig{Username: "u", Password: "p"}, want: &authn.AuthConfig{Username: "u", Password: "p"}},
		{name: "auth field", a: &runtimeapi.AuthConfig{Auth: b64}, want: &authn.AuthConfig{Username: "alice", Password: "s3cr:et"}},
		{name: "identity token", a: &runtimeapi.AuthConfig{IdentityToken: "it"}, want: &authn.AuthConfig{IdentityToken: "it"}},
		{name: "same server", a: &runtimeapi.AuthConfig{ServerAddress: "https://registry.example:5000/v2/", Username: "u", Password: "p"},
			want: &authn.AuthConfig{Username: "u", Password: "p"}},
		{name: "another server gets nothing", a: &runtimeapi.AuthConfig{ServerAddress: "other.example", Username: "u", Password: "p"}},
		{name: "auth not base64", a: &runtimeapi.AuthConfig{Auth: "%%%"}, bad: true},
		{name: "auth without colon", a: &runtimeapi.AuthConfig{Auth: base64.StdEncoding.EncodeToString([]byte("alice"))}, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := authFor(tt.a, ref)
			if tt.bad {
				if status.Code(err) != codes.InvalidArgument {
					t.Fatalf("error %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestGRPCError(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("pull: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{&transport.Error{StatusCode: http.StatusUnauthorized}, codes.Unauthenticated},
		{&transport.Error{StatusCode: http.StatusForbidden}, codes.PermissionDenied},
		{&transport.Error{StatusCode: http.StatusNotFound}, codes.NotFound},
		{&transport.Error{StatusCode: http.StatusTooManyRequests}, codes.Unknown},
		{fmt.Errorf("USER %q: %w", "nobody", imgconv.ErrUnknownUser), codes.FailedPrecondition},
		{errors.New("GET /v2/x/manifests/1: MANIFEST_UNKNOWN: manifest unknown"), codes.NotFound},
		{status.Error(codes.InvalidArgument, "kept"), codes.InvalidArgument},
		{errors.New("disk full"), codes.Unknown},
	}
	for _, tt := range tests {
		if got := status.Code(grpcError(tt.err)); got != tt.want {
			t.Errorf("grpcError(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
	if grpcError(nil) != nil {
		t.Error("grpcError(nil) is not nil")
	}
}

func TestImageUser(t *testing.T) {
	for user, want := range map[string]*runtimeapi.Image{
		"":         {},
		"1000":     {Uid: &runtimeapi.Int64Value{Value: 1000}},
		"0:0":      {Uid: &runtimeapi.Int64Value{Value: 0}},
		"www-data": {Username: "www-data"},
		"app:1000": {Username: "app"},
	} {
		p := (&imageRecord{User: user}).toProto()
		if p.GetUid().GetValue() != want.GetUid().GetValue() || (p.Uid == nil) != (want.Uid == nil) || p.Username != want.Username {
			t.Errorf("USER %q: uid %v username %q", user, p.Uid, p.Username)
		}
	}
}

func TestStoreKeepsStateAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = st.update(func(s *stateFile) error {
		s.Images["sha256:x"] = &imageRecord{ID: "sha256:x", RepoTags: []string{"a:1"}}
		s.Containers["c"] = &containerRecord{ID: "c", VMID: 123, State: runtimeapi.ContainerState_CONTAINER_RUNNING}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.update(func(s *stateFile) error { delete(s.Images, "sha256:x"); return errors.New("abandoned") }); err == nil {
		t.Fatal("update lost fn's error")
	}
	again, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	again.view(func(s *stateFile) {
		if s.Images["sha256:x"] == nil || s.Containers["c"].VMID != 123 || s.Sandboxes == nil {
			t.Errorf("reopened state: %+v", s)
		}
	})
	if left, _ := filepath.Glob(filepath.Join(dir, ".state-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	os.WriteFile(filepath.Join(dir, "state.json"), []byte("{broken"), 0o600)
	if _, err := openStore(dir); err == nil || !strings.Contains(err.Error(), "state.json") {
		t.Errorf("a corrupt state file: %v", err)
	}
}

func TestMatchLabels(t *testing.T) {
	have := map[string]string{"app": "web", "tier": "front"}
	for _, tt := range []struct {
		want  map[string]string
		match bool
	}{{nil, true}, {map[string]string{"app": "web"}, true}, {map[string]string{"app": "db"}, false}, {map[string]string{"x": ""}, false}, {map[string]string{"x": "1"}, false}} {
		if got := matchLabels(have, tt.want); got != tt.match {
			t.Errorf("matchLabels(%v) = %v", tt.want, got)
		}
	}
}
