module github.com/pve-image/pve-image

go 1.26.8

require (
	github.com/google/go-containerregistry v0.22.1
	github.com/klauspost/compress v1.20.4
)

require golang.org/x/sys v0.50.0
