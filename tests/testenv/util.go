package testenv

import (
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
)

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

type nopReadCloser struct{ io.Reader }

func (nopReadCloser) Close() error { return nil }

type basic struct{ user, pass string }

func (b *basic) Authorization() (*authn.AuthConfig, error) {
	return &authn.AuthConfig{Username: b.user, Password: b.pass}, nil
}
