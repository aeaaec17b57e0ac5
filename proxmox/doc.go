// Package proxmox is pve-image's only way to the Proxmox VE API: nobody else
// builds Proxmox HTTP requests.
//
// It rests on github.com/luthermonson/go-proxmox for the connection, token
// and ticket authentication (with renewal) and JSON calls, and works around
// that library in one place each where it is wrong (proxmox.md §7):
//
//   - uploads: UploadWithHash sends its form fields in Go's random map order,
//     and Proxmox's multipart parser only accepts content, checksum-algorithm,
//     checksum, then the file; Upload here writes them in that order and
//     streams the file (upload.go);
//   - tasks: Task.Wait returns nil for failed tasks and calls "WARNINGS: n"
//     a failure; WaitTask here polls the node named in the UPID and returns
//     the task's error with the tail of its log (task.go);
//   - errors: go-proxmox reads only 400, 500 and 501 as errors, so a 503 or
//     pveproxy's "595 Connection refused" (a node it cannot reach) with a
//     body of {"data":null} passed for an empty success; and it turns 401
//     and 403 into one ErrNotAuthorized. The transport here makes every
//     status but 2xx an *APIError with Proxmox's status and message and
//     what to do about it (which privilege is missing, which node is out
//     of reach), and tries GETs again on transient failures: broken
//     connections, 502-504 and 595-597. Nothing else is sent twice by it: a
//     create whose answer was lost may have happened (transport.go,
//     errors.go).
//
// It also pins self-signed certificates by fingerprint, checked during the
// TLS handshake, before any credential is sent; an untrusted certificate on
// the first call is reported with the fingerprint it has and how to read
// the node's own (pvenode cert info). The API is HTTPS only: an http:// URL
// is refused before anything is sent, since pveproxy's redirect to https
// would come after the credentials crossed the network in clear text.
package proxmox
