// Package tmplreg keeps Proxmox container templates in an OCI registry, the
// distribution layer every team already runs, so that machines share
// templates instead of each converting the same image again.
//
// A template is stored as an OCI 1.1 artifact: an image manifest whose
// artifactType is ArtifactType (no container runtime takes it for an image
// to run), a config blob (ConfigMediaType, a Config: the source image, its
// manifest and config digests, the platform, the conversion options, the
// converter and encoder, the template's file name, size and SHA-256, and
// its full metadata), and the template file as its layers — one, or
// consecutive chunks of at most Options.ChunkSize for large files, whose
// concatenation is the file. Annotations say what it is.
//
// Tags: KeyTag(key) names the artifact of one cache key (template.Builder.Key:
// the image's manifest and config digests, the platform, the options, the
// converter's version and the encoder), so any machine finds a template by
// computing the key, without listing the registry. Human tags name the
// source: <name>_<tag>_<arch> (the template's file name without its
// suffix) the artifact of one platform, and <name>_<tag> an index of the
// platforms published for that source tag.
//
// Fetching verifies everything before a byte is trusted: the manifest's
// types and sizes, the config's key, image and platform against what was
// asked for, every blob against its digest, and the whole file against the
// SHA-256 the config records. Anything that does not match is refused
// (template.Builder then converts locally, with a warning).
//
// Registries are reached exactly as pulls reach them, through the registry
// package's endpoints and transport (registry.Endpoints, registry.Upstream,
// registry.NewTransport): Docker's config.json and credential helpers (or
// explicit credentials), plain HTTP only for loopback and
// --insecure-registry hosts (registry.PlainHTTP), mirrors tried first for
// lookups (never for pushes), GET and HEAD retried with backoff and
// Retry-After, uploads started again as a whole, and a stall timeout that
// counts bytes sent as well as received. A blob download that breaks
// midway is fetched again from its start, within the retries.
//
// tmplreg sits between cmd/batch and template: it imports template (for
// Meta and the Remote interface it implements), registry (references,
// mirrors, platforms) and cache (for its digest-mismatch error), and
// nothing imports it but those above. It must never write into the cache
// itself (template.Builder decides what goes there) nor convert images, and
// it never deletes anything from a registry.
package tmplreg
