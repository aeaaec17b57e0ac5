package registry

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Transport is where an image comes from.
type Transport string

const (
	Docker        Transport = "docker"         // a registry
	OCI           Transport = "oci"            // an OCI image layout directory
	OCIArchive    Transport = "oci-archive"    // a tar of an OCI image layout
	DockerArchive Transport = "docker-archive" // the output of docker save
)

// Reference names an image in one of the transports, as skopeo spells them:
// REF or docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG],
// docker-archive:FILE[:REF].
type Reference struct {
	Transport Transport
	// Name is the registry reference for Docker, normalised.
	Name name.Reference
	// Path is the directory or file for the local transports.
	Path string
	// Tag selects an image inside a layout or archive; empty takes the only
	// one.
	Tag string
}

// ParseReference parses s. Registry names are normalised as Docker does;
// hosts listed in insecure are reached over plain HTTP.
func ParseReference(s string, insecure []string) (Reference, error) {
	tr, rest, found := strings.Cut(s, ":")
	if found {
		switch Transport(tr) {
		case OCI, OCIArchive, DockerArchive:
			// skopeo splits at the first colon too: paths with colons
			// cannot be named.
			p, tag, _ := strings.Cut(rest, ":")
			if p == "" {
				return Reference{}, fmt.Errorf("image reference %q: no path after %s:", s, tr)
			}
			return Reference{Transport: Transport(tr), Path: p, Tag: tag}, nil
		case Docker:
			rest = strings.TrimPrefix(rest, "//")
			s = rest
		}
	}
	if s == "" {
		return Reference{}, fmt.Errorf("empty image reference")
	}
	// A scheme other than docker:// would otherwise reach
	// go-containerregistry as a host name ("foo://bar" dials foo).
	if scheme, _, ok := strings.Cut(s, "://"); ok {
		return Reference{}, fmt.Errorf("image reference %q: unknown transport %q; use docker://, oci:, oci-archive: or docker-archive: (registries are named without a scheme; --insecure-registry allows plain HTTP)", s, scheme)
	}
	ref, err := name.ParseReference(s, name.WeakValidation)
	if err == nil {
		err = checkRepository(ref.Context().RepositoryStr())
	}
	if err == nil && PlainHTTP(ref.Context().RegistryStr(), insecure) {
		ref, err = name.ParseReference(s, name.WeakValidation, name.Insecure)
	}
	if err != nil {
		return Reference{}, fmt.Errorf("image reference %q: %w", s, err)
	}
	return Reference{Transport: Docker, Name: ref}, nil
}

// pathComponent is one component of a repository path in Docker's
// reference grammar (distribution/reference): lowercase letters and digits,
// separated by one '.' or '_', "__", or dashes.
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// checkRepository applies Docker's grammar to each path component, which
// go-containerregistry does not: it accepts "." and "..", and a repository
// of "../../etc/passwd" then reaches URLs and file names.
func checkRepository(repo string) error {
	for _, c := range strings.Split(repo, "/") {
		switch {
		case c == "." || c == "..":
			return fmt.Errorf("repository %q: path segment %q is not allowed", repo, c)
		case !pathComponent.MatchString(c):
			return fmt.Errorf("repository %q: component %q is not lowercase letters and digits separated by '.', '_', '__' or '-'", repo, c)
		}
	}
	return nil
}

// String gives the reference back in canonical form: registry references
// fully qualified (docker.io/library/alpine:latest), others as
// transport:path[:tag].
func (r Reference) String() string {
	if r.Transport == Docker {
		return Normalize(r.Name)
	}
	s := string(r.Transport) + ":" + r.Path
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	return s
}

// Normalize spells a registry reference as Docker and kubelet do:
// docker.io/library/alpine:latest, not index.docker.io/library/alpine.
func Normalize(ref name.Reference) string {
	s := repoName(ref)
	switch r := ref.(type) {
	case name.Tag:
		s += ":" + r.TagStr()
	case name.Digest:
		s += "@" + r.DigestStr()
	}
	return s
}

// Repository is the normalised repository without tag or digest
// (docker.io/library/alpine); for local transports, the file's base name.
func (r Reference) Repository() string {
	if r.Transport == Docker {
		return repoName(r.Name)
	}
	base := filepath.Base(strings.TrimRight(r.Path, "/"))
	for _, ext := range []string{".tar.gz", ".tgz", ".tar"} {
		base = strings.TrimSuffix(base, ext)
	}
	return base
}

func repoName(ref name.Reference) string {
	repo := ref.Context()
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + repo.RepositoryStr()
}

// TagOrDigest is the tag, "sha256:..." for digest references, or "" when a
// local source names no tag.
func (r Reference) TagOrDigest() string {
	if r.Transport != Docker {
		return r.Tag
	}
	switch n := r.Name.(type) {
	case name.Tag:
		return n.TagStr()
	case name.Digest:
		return n.DigestStr()
	}
	return ""
}
