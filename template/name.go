package template

import (
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// PVEArch names a platform's architecture as Proxmox's arch option does
// (amd64 i386 arm64 armhf riscv32 riscv64), or as OCI does for the rest.
func PVEArch(p v1.Platform) string {
	switch p.Architecture {
	case "amd64", "arm64", "riscv64":
		return p.Architecture
	case "386":
		return "i386"
	case "arm":
		if p.Variant == "" || p.Variant == "v7" || p.Variant == "v8" {
			return "armhf"
		}
		return "arm" + p.Variant
	}
	return p.Architecture + p.Variant
}

// SupportedArch reports whether Proxmox's arch option accepts a.
func SupportedArch(a string) bool {
	switch a {
	case "amd64", "i386", "arm64", "armhf", "riscv32", "riscv64":
		return true
	}
	return false
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)

// Sanitize replaces what Proxmox's normalize_content_filename would: every
// character outside [a-zA-Z0-9_.-] becomes "_".
func Sanitize(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// FileName is the template name for an image: <name>_<tag>_<arch><suffix>.
// The name is the repository without Docker Hub's docker.io/library/ and
// with "/" and ":" turned into "-", and no "_", so that the first and last
// "_" split the fields again. Digest references put sha256-<12 hex> where the
// tag goes.
func FileName(repository, tagOrDigest string, p v1.Platform, c Compression) string {
	tag := tagOrDigest
	if alg, hex, ok := strings.Cut(tag, ":"); ok {
		tag = alg + "-" + hex[:min(12, len(hex))]
	}
	if tag == "" {
		tag = "latest"
	}
	return NameOf(repository) + "_" + Sanitize(tag) + "_" + Sanitize(PVEArch(p)) + c.Suffix()
}

// NameOf is the name field of a template name for a repository: without
// Docker Hub's docker.io/library/, "/" and ":" turned into "-", no "_".
func NameOf(repository string) string {
	n := strings.TrimPrefix(repository, "docker.io/")
	n = strings.TrimPrefix(n, "library/")
	return Sanitize(strings.NewReplacer("/", "-", ":", "-", "_", "-").Replace(n))
}

var vztmplName = regexp.MustCompile(`^[^/]+\.(?:tar|tar\.(?:gz|xz|zst|bz2))$`)

// ValidName reports whether Proxmox stores a file of this name as a
// container template (pve-storage's VZTMPL_EXT_RE_1 after normalisation).
func ValidName(name string) bool {
	return name == Sanitize(name) && vztmplName.MatchString(name)
}

// StorageName is the name a converted template gets on Proxmox storage: its
// cache name with the first 12 hex digits of its SHA-256 before the
// extension, <name>_<tag>_<arch>.<sha12>.tar.zst, so that a file of that name
// and size on a storage is this very template.
func StorageName(file, sha256 string) string {
	i := strings.Index(file, ".tar")
	if i < 0 || len(sha256) < 12 {
		return file
	}
	return file[:i] + "." + sha256[:12] + file[i:]
}

var storageNameRE = regexp.MustCompile(`^([^_]+)_(.+)_([^_.]+)\.([0-9a-f]{12})\.tar(?:\.(?:gz|xz|zst|bz2))?$`)

// StorageNameInfo is what a StorageName says about its template.
type StorageNameInfo struct {
	Name, Tag, Arch, Digest string
}

// ParseStorageName reads a name StorageName wrote; ok is false for other
// templates.
func ParseStorageName(name string) (StorageNameInfo, bool) {
	m := storageNameRE.FindStringSubmatch(name)
	if m == nil {
		return StorageNameInfo{}, false
	}
	return StorageNameInfo{Name: m[1], Tag: m[2], Arch: m[3], Digest: m[4]}, true
}
