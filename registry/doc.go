// Package registry turns an image reference into verified blobs in a blob
// store and a v1.Image over them, for one platform.
//
// It owns reference parsing and normalisation (Docker's rules: "alpine" is
// docker.io/library/alpine:latest; repository components follow Docker's
// grammar, so "." and ".." are refused, and unknown scheme:// transports
// are refused rather than dialled), the transports skopeo users know
// (docker://, oci:, oci-archive:, docker-archive:), registry authentication
// (Docker's config.json and credential helpers through go-containerregistry's
// keychain, or explicit credentials), which registries may be reached over
// plain HTTP, and platform selection from multi-platform indexes.
//
// Every registry conversation — pulls here, the template registry
// (tmplreg), pushes — goes through one transport (NewTransport), reached
// through Endpoints, Upstream or RemoteOptions, so that the plain-HTTP rule,
// credentials, retries and stall timeout cannot drift apart.
//
// Registry requests survive passing trouble: dropped and refused
// connections, 408, 429 and 5xx answers are retried with backoff (Retry-After
// honoured up to MaxRetryAfter), a request that moves no byte (sent or
// received) for the stall timeout is abandoned and retried, and a blob
// download that breaks resumes with a Range request, all within
// Options.Retries. Only GET and HEAD are retried request by request; a
// failed upload is started again as a whole by go-containerregistry's
// remote.Write, with the predicate and backoff Endpoint.RemoteOptions gives
// it, and never for an error the transport already retried. Nothing is read
// past what a descriptor declares, and manifests, indexes and configs are
// bounded by MaxManifestSize, so a hostile server cannot fill the disk or
// the memory before a digest check refuses its content.
//
// Tags are remembered (TagStore) as they resolve: Options.Offline uses only
// the store, and a tag whose registry cannot be reached falls back to the
// digest it last resolved to, with a warning.
//
// It knows nothing of Proxmox or templates, and stores blobs only through the
// BlobStore interface.
package registry
