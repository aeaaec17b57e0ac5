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
//   - errors: go-proxmox turns 401 and 403 into one ErrNotAuthorized; the
//     transport here keeps what Proxmox said (which privilege is missing) and
//     says what to check (client.go).
//
// It also pins self-signed certificates by fingerprint, checked during the
// TLS handshake, before any credential is sent.
package proxmox
