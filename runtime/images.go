package runtime

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/imgconv"
	"github.com/pve-image/pve-image/registry"
)

// parseImage reads an image name as kubelet and crictl send it: short names
// are normalised (busybox is docker.io/library/busybox:latest); only
// registry references make sense here.
func parseImage(s string) (registry.Reference, error) {
	if s == "" {
		return registry.Reference{}, status.Error(codes.InvalidArgument, "no image name")
	}
	ref, err := registry.ParseReference(s, nil)
	if err != nil || ref.Transport != registry.Docker {
		return registry.Reference{}, status.Errorf(codes.InvalidArgument, "invalid image reference %q", s)
	}
	return ref, nil
}

// isImageID reports whether s is an image ID (sha256:<64 hex>, or the
// 64 hex digits alone).
func isImageID(s string) (string, bool) {
	h := strings.TrimPrefix(s, "sha256:")
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", false
	}
	return "sha256:" + h, true
}

// findImage looks an image up by ID, repo tag or repo digest; nil when
// there is none.
func (s *Server) findImage(st *stateFile, ref string) *imageRecord {
	if id, ok := isImageID(ref); ok {
		return st.Images[id]
	}
	r, err := registry.ParseReference(ref, nil)
	if err != nil || r.Transport != registry.Docker {
		return nil
	}
	want := r.String()
	for _, id := range sortedKeys(st.Images) {
		img := st.Images[id]
		if slices.Contains(img.RepoTags, want) || slices.Contains(img.RepoDigests, want) {
			return img
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// toProto describes a record for the CRI.
func (img *imageRecord) toProto() *runtimeapi.Image {
	p := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    slices.Clone(img.RepoTags),
		RepoDigests: slices.Clone(img.RepoDigests),
		Size:        uint64(img.Size),
		Pinned:      img.Pinned,
		Spec:        &runtimeapi.ImageSpec{Image: img.ID},
	}
	// USER as containerd reads it: a number before any ':' is a uid,
	// anything else a user name.
	user, _, _ := strings.Cut(img.User, ":")
	if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
		p.Uid = &runtimeapi.Int64Value{Value: uid}
	} else if user != "" {
		p.Username = user
	}
	return p
}

// authFor turns a CRI AuthConfig into registry credentials. As containerd
// does, credentials meant for another server_address are not sent.
func authFor(a *runtimeapi.AuthConfig, ref registry.Reference) (*authn.AuthConfig, error) {
	if a == nil {
		return nil, nil
	}
	if a.ServerAddress != "" {
		host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(a.ServerAddress, "https://"), "http://"), "/")
		host, _, _ = strings.Cut(host, "/")
		reg, err := name.NewRegistry(host, name.WeakValidation)
		if err == nil && reg.RegistryStr() != ref.Name.Context().RegistryStr() {
			return nil, nil
		}
	}
	c := &authn.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
	if a.Auth != "" && a.Username == "" {
		b, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, "auth is not base64")
		}
		u, p, ok := strings.Cut(strings.TrimRight(string(b), "\x00"), ":")
		if !ok {
			return nil, status.Error(codes.InvalidArgument, "auth does not decode to user:password")
		}
		c.Username, c.Password = u, p
	}
	if *c == (authn.AuthConfig{}) {
		return nil, nil
	}
	return c, nil
}

// grpcError gives registry and conversion failures the gRPC code that says
// what went wrong, keeping the message.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	var te *transport.Error
	var stall *registry.StallError
	var gaveUp *registry.GaveUpError
	var netErr net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.As(err, &stall), (errors.As(err, &netErr) || errors.As(err, &gaveUp)) && !errors.As(err, &te):
		// A registry that stalls or cannot be reached is unavailable to
		// kubelet as a 503 is.
		return status.Error(codes.Unknown, "RegistryUnavailable: "+err.Error())
	case errors.As(err, &te):
		switch te.StatusCode {
		case http.StatusUnauthorized:
			return status.Error(codes.Unauthenticated, err.Error())
		case http.StatusForbidden:
			return status.Error(codes.PermissionDenied, err.Error())
		case http.StatusNotFound:
			return status.Error(codes.NotFound, err.Error())
		case http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
			// Unknown, not Unavailable: cri-client unwraps only Unknown
			// errors to the bare message kubelet matches the prefix of
			// (cri.md; remote_image.go).
			return status.Error(codes.Unknown, "RegistryUnavailable: "+err.Error())
		}
	case errors.Is(err, imgconv.ErrUnknownUser), errors.Is(err, imgconv.ErrMediaType), errors.Is(err, imgconv.ErrHighID):
		return status.Error(codes.FailedPrecondition, err.Error())
	case strings.Contains(err.Error(), "MANIFEST_UNKNOWN"), strings.Contains(err.Error(), "NAME_UNKNOWN"),
		strings.Contains(err.Error(), "no manifest for platform"):
		return status.Error(codes.NotFound, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}
