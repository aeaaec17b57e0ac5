package tests

import (
	"net"
	"os"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/pve-image/pve-image/registry"
)

func emptyIndex(t *testing.T) v1.ImageIndex { return empty.Index }

// tarDir archives an OCI layout directory into dst, as an OCI archive.
func tarDir(t *testing.T, dir, dst string) {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := registry.TarLayout(dir, f, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
}

func freePortOn(t testing.TB, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", host, err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
