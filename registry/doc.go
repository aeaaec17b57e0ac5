// Package registry turns an image reference into verified blobs in a blob
// store and a v1.Image over them, for one platform.
//
// It owns reference parsing and normalisation (Docker's rules: "alpine" is
// docker.io/library/alpine:latest), the transports skopeo users know
// (docker://, oci:, oci-archive:, docker-archive:), registry authentication
// (Docker's config.json and credential helpers through go-containerregistry's
// keychain, or explicit credentials), which registries may be reached over
// plain HTTP, and platform selection from multi-platform indexes.
//
// It knows nothing of Proxmox or templates, and stores blobs only through the
// BlobStore interface.
package registry
