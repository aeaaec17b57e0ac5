package tests

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pve-image/pve-image/runtime"
)

// shortDir is a directory with a short path: unix socket paths are limited
// to 108 bytes.
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pvelisten-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// staleSocket leaves a socket at p that nobody listens on, as a daemon
// that died does.
func staleSocket(t testing.TB, p string) {
	t.Helper()
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

// TestListen: what runtime.Listen replaces, what it refuses, and what it
// says about it.
func TestListen(t *testing.T) {
	type env struct {
		dir, sock string
		log       *bytes.Buffer
		pki       *testPKI
	}
	tests := []struct {
		name     string
		setup    func(t *testing.T, e env) // makes what is at e.sock
		endpoint func(e env) string        // default unix://e.sock
		opts     func(e env) runtime.ListenOptions
		wants    []string // in the error; none: it listens
		log      string   // in the log
		after    func(t *testing.T, e env)
	}{
		{name: "nothing there"},
		{name: "stale socket", setup: func(t *testing.T, e env) { staleSocket(t, e.sock) }},
		{name: "regular file", setup: func(t *testing.T, e env) { os.WriteFile(e.sock, []byte("keep me"), 0o600) },
			wants: []string{e0 + " is a regular file, not a socket; it is left alone"},
			after: func(t *testing.T, e env) {
				if b, _ := os.ReadFile(e.sock); string(b) != "keep me" {
					t.Errorf("the file now holds %q", b)
				}
			}},
		{name: "directory", setup: func(t *testing.T, e env) { os.Mkdir(e.sock, 0o700) }, wants: []string{"is a directory, not a socket"}},
		{name: "symlink to a stale socket", setup: func(t *testing.T, e env) {
			staleSocket(t, e.sock+".real")
			os.Symlink(e.sock+".real", e.sock)
		}, wants: []string{"is a symbolic link, not a socket"}},
		{name: "live socket", setup: func(t *testing.T, e env) {
			l, err := net.Listen("unix", e.sock)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}, wants: []string{"another process serves on the socket " + e0, fmt.Sprintf("(pid %d: ", os.Getpid()), "a pve-image cri already running?"},
			after: func(t *testing.T, e env) {
				conn, err := net.Dial("unix", e.sock)
				if err != nil {
					t.Fatalf("the live socket was taken: %v", err)
				}
				conn.Close()
			}},
		{name: "unix with TLS", opts: func(e env) runtime.ListenOptions { return e.pki.options() }, wants: []string{"TLS (--tls-cert, --tls-key, --tls-client-ca) is for tcp:// endpoints"}},
		{name: "loopback TCP", endpoint: func(env) string { return "tcp://127.0.0.1:0" }},
		{name: "localhost TCP", endpoint: func(env) string { return "tcp://localhost:0" }},
		{name: "every interface", endpoint: func(env) string { return "tcp://0.0.0.0:0" },
			wants: []string{"refusing to serve the CRI off the loopback interface without authentication", "--tls-client-ca", "--insecure-listen"}},
		{name: "every interface, no host", endpoint: func(env) string { return "tcp://:0" }, wants: []string{"refusing to serve the CRI"}},
		{name: "a host name", endpoint: func(env) string { return "tcp://pve1.example:0" }, wants: []string{"refusing to serve the CRI"}},
		{name: "insecure on purpose", endpoint: func(env) string { return "tcp://0.0.0.0:0" },
			opts: func(e env) runtime.ListenOptions { return runtime.ListenOptions{Insecure: true} },
			log:  "serving the CRI without authentication (--insecure-listen)"},
		{name: "TLS without client CA", endpoint: func(env) string { return "tcp://0.0.0.0:0" },
			opts: func(e env) runtime.ListenOptions {
				o := e.pki.options()
				o.ClientCAFile = ""
				return o
			}, wants: []string{"TLS needs all of --tls-cert, --tls-key and --tls-client-ca"}},
		{name: "TLS with a CA file that is no certificate", endpoint: func(env) string { return "tcp://0.0.0.0:0" },
			opts: func(e env) runtime.ListenOptions {
				o := e.pki.options()
				o.ClientCAFile = o.KeyFile
				return o
			}, wants: []string{"--tls-client-ca", "no PEM certificate"}},
		{name: "TLS with client certificates", endpoint: func(env) string { return "tcp://0.0.0.0:0" },
			opts: func(e env) runtime.ListenOptions { return e.pki.options() }},
	}
	pki := newTestPKI(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := shortDir(t)
			e := env{dir: dir, sock: filepath.Join(dir, "cri.sock"), log: &bytes.Buffer{}, pki: pki}
			if tt.setup != nil {
				tt.setup(t, e)
			}
			endpoint := "unix://" + e.sock
			if tt.endpoint != nil {
				endpoint = tt.endpoint(e)
			}
			var o runtime.ListenOptions
			if tt.opts != nil {
				o = tt.opts(e)
			}
			o.Log = slog.New(slog.NewTextHandler(e.log, nil))
			l, err := runtime.Listen(endpoint, o)
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				go func() {
					for {
						conn, err := l.Accept()
						if err != nil {
							return
						}
						conn.Close()
					}
				}()
				conn, err := net.Dial(l.Addr().Network(), l.Addr().String())
				if err != nil {
					t.Fatalf("listening on %s, but: %v", l.Addr(), err)
				}
				conn.Close()
			} else {
				if err == nil {
					l.Close()
					t.Fatalf("listening on %s", l.Addr())
				}
				for _, w := range tt.wants {
					if w = strings.ReplaceAll(w, e0, e.sock); !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			}
			if !strings.Contains(e.log.String(), tt.log) || tt.log == "" && e.log.Len() > 0 {
				t.Errorf("log %q, want %q", e.log, tt.log)
			}
			if tt.after != nil {
				tt.after(t, e)
			}
		})
	}
}

// e0 stands for the socket's path in the wanted errors of TestListen.
const e0 = "<socket>"

// TestCRISocketInUse: a second daemon leaves the first's socket alone and
// says who has it; a regular file at the path is not touched; the socket
// of a daemon that died is taken over.
func TestCRISocketInUse(t *testing.T) {
	c := newCLI(t)
	d := startCRI(t, c)
	sock := strings.TrimPrefix(d.Socket, "unix://")
	// The failing daemons get no template store: past the listen they
	// would stop on that, rather than serve.
	c.fails([]string{"cri", "--listen", d.Socket},
		"another process serves on the socket "+sock, fmt.Sprintf("(pid %d: ", d.cmd.Process.Pid))
	if out := d.crictlOK(t, "version"); !strings.Contains(out, "pve-image") {
		t.Errorf("the first daemon no longer answers: %s", out)
	}

	file := filepath.Join(filepath.Dir(sock), "not-a-socket")
	os.WriteFile(file, []byte("data"), 0o600)
	c.fails([]string{"cri", "--listen", "unix://" + file}, file+" is a regular file, not a socket")
	if b, _ := os.ReadFile(file); string(b) != "data" {
		t.Errorf("the file now holds %q", b)
	}

	d.kill(t)
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("a killed daemon's socket should stay behind: %v", err)
	}
	d2 := startCRIOn(t, c, d.Socket, unixReady(d.Socket), "--template-dir", d.StoreDir)
	if out := d2.crictlOK(t, "version"); !strings.Contains(out, "pve-image") {
		t.Errorf("crictl version: %s", out)
	}
}

// startCRIOn runs the daemon on listen and waits until ready succeeds; it
// stops with the test.
func startCRIOn(t testing.TB, c *cli, listen string, ready func() error, extra ...string) *criDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &criDaemon{Socket: listen, c: c, LogFile: filepath.Join(shortDir(t), "daemon.log")}
	cmd := c.cmd(ctx, append([]string{"cri", "--listen", listen}, extra...)...)
	logf, err := os.Create(d.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(d.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-d.done:
		case <-time.After(15 * time.Second):
			cancel()
			<-d.done
		}
		cancel()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ready() != nil; time.Sleep(50 * time.Millisecond) {
		select {
		case <-d.done:
			t.Fatalf("pve-image cri exited:\n%s", d.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pve-image cri did not serve:\n%s", d.log())
		}
	}
	return d
}

// unixReady is whether something accepts connections on a unix socket.
func unixReady(endpoint string) func() error {
	return func() error {
		conn, err := net.Dial("unix", strings.TrimPrefix(endpoint, "unix://"))
		if err == nil {
			conn.Close()
		}
		return err
	}
}

// grpcReady is whether the CRI at addr answers Version.
func grpcReady(addr string, creds credentials.TransportCredentials) func() error {
	return func() error { _, err := criVersion(addr, creds); return err }
}

// TestCRITCPListen: off the loopback interface the CRI is served only with
// TLS and client certificates, or with --insecure-listen and a warning.
func TestCRITCPListen(t *testing.T) {
	c := newCLI(t)
	store := filepath.Join(shortDir(t), "templates")
	port := freePortOn(t, "0.0.0.0")
	everywhere := "tcp://0.0.0.0:" + port
	// No template store: past the listen the daemon would stop on that.
	c.fails([]string{"cri", "--listen", everywhere},
		"refusing to serve the CRI off the loopback interface without authentication", "--tls-cert, --tls-key, --tls-client-ca", "--insecure-listen")

	pki := newTestPKI(t)
	o := pki.options()
	startCRIOn(t, c, everywhere, grpcReady("127.0.0.1:"+port, credentials.NewTLS(pki.clientTLS(pki.client))),
		"--template-dir", store, "--tls-cert", o.CertFile, "--tls-key", o.KeyFile, "--tls-client-ca", o.ClientCAFile)
	tests := []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{name: "client certificate", creds: credentials.NewTLS(pki.clientTLS(pki.client)), ok: true},
		{name: "no client certificate", creds: credentials.NewTLS(pki.clientTLS(nil))},
		{name: "certificate of another CA", creds: credentials.NewTLS(pki.clientTLS(pki.rogue))},
		{name: "plaintext", creds: insecure.NewCredentials()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := criVersion("127.0.0.1:"+port, tt.creds)
			if tt.ok && err != nil || !tt.ok && err == nil {
				t.Errorf("Version: %v, want success %v", err, tt.ok)
			}
		})
	}
}

// TestCRIInsecureListen: --insecure-listen serves off loopback, and says
// at start what that means.
func TestCRIInsecureListen(t *testing.T) {
	c := newCLI(t)
	port := freePortOn(t, "0.0.0.0")
	d := startCRIOn(t, c, "tcp://0.0.0.0:"+port, grpcReady("127.0.0.1:"+port, insecure.NewCredentials()),
		"--template-dir", filepath.Join(shortDir(t), "templates"), "--insecure-listen")
	if log := d.log(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "serving the CRI without authentication (--insecure-listen)") {
		t.Errorf("no warning in the log:\n%s", log)
	}
}

// TestCRIConfigUnknownKey: a misspelt key in --config is an error naming
// the file and the key, before anything listens.
func TestCRIConfigUnknownKey(t *testing.T) {
	c := newCLI(t)
	dir := shortDir(t)
	cfg := filepath.Join(dir, "cri.yaml")
	// No template store: a daemon that read past the key would stop on
	// that, rather than serve.
	os.WriteFile(cfg, []byte("listen: unix://"+filepath.Join(dir, "cri.sock")+"\ninsecureListn: true\n"), 0o600)
	c.fails([]string{"cri", "--config", cfg}, "config "+cfg, `line 2: unknown key "insecureListn" (did you mean "insecureListen"?)`)
	if _, err := os.Lstat(filepath.Join(dir, "cri.sock")); err == nil {
		t.Error("the daemon listened despite the bad config")
	}
}

// criVersion calls RuntimeService.Version at addr.
func criVersion(addr string, creds credentials.TransportCredentials) (string, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return "", err
	}
	return v.RuntimeName, nil
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, and a client certificate of another CA.
type testPKI struct {
	dir           string
	caPool        *x509.CertPool
	client, rogue *tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), caPool: x509.NewCertPool()}
	ca, caKey := selfSignedCA(t, "pve-image test CA")
	p.caPool.AddCert(ca)
	writePEM(t, filepath.Join(p.dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	server, serverKey := issue(t, ca, caKey, "cri server", x509.ExtKeyUsageServerAuth)
	writePEM(t, filepath.Join(p.dir, "server.pem"), "CERTIFICATE", server.Raw)
	der, _ := x509.MarshalECPrivateKey(serverKey)
	writePEM(t, filepath.Join(p.dir, "server-key.pem"), "EC PRIVATE KEY", der)
	cl, clKey := issue(t, ca, caKey, "kubelet", x509.ExtKeyUsageClientAuth)
	p.client = &tls.Certificate{Certificate: [][]byte{cl.Raw}, PrivateKey: clKey}
	other, otherKey := selfSignedCA(t, "another CA")
	rogue, rogueKey := issue(t, other, otherKey, "intruder", x509.ExtKeyUsageClientAuth)
	p.rogue = &tls.Certificate{Certificate: [][]byte{rogue.Raw}, PrivateKey: rogueKey}
	return p
}

func (p *testPKI) options() runtime.ListenOptions {
	return runtime.ListenOptions{CertFile: filepath.Join(p.dir, "server.pem"), KeyFile: filepath.Join(p.dir, "server-key.pem"), ClientCAFile: filepath.Join(p.dir, "ca.pem")}
}

// clientTLS trusts the test CA and presents cert, if any.
func (p *testPKI) clientTLS(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: p.caPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func selfSignedCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func issue(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
