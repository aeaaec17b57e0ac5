package pvesim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pve-image/pve-image/tests/pvelxc"
)

// Options configure a simulated cluster.
type Options struct {
	// Version is GET /version's "version"; release is its major.minor.
	// Default "9.1.1".
	Version string
	// Nodes are the cluster's nodes; default {"pve1", "pve2"}.
	Nodes []string
	// EntryNode receives the requests: uploads land and non-proxied
	// workers run there. Default Nodes[0].
	EntryNode string
	// Dir holds storages, containers and temporary files; default a new
	// temporary directory that Close removes.
	Dir string
	// AuthDelay delays answers to failed authentication (Proxmox: 3 s).
	AuthDelay time.Duration
	// TicketLifetime is how long a ticket is valid; default 2h.
	TicketLifetime time.Duration
	// RealLXC creates, starts and stops real unprivileged containers with
	// pvelxc (needs pvelxc.Check() == nil).
	RealLXC bool
	// Bridges are the bridges that exist; a NIC must name one. With
	// RealLXC the NIC is attached to that Linux bridge, which must exist
	// on the host. Default {"vmbr0"}.
	Bridges []string
}

// Token is an API token.
type Token struct {
	ID     string // "user@realm!name"
	Secret string
	Privs  []string // e.g. "Datastore.AllocateTemplate"; "*" is all
}

// User can log in with a password.
type User struct {
	Name     string // "user@realm"
	Password string
	Privs    []string // "*" is all; root@pam always has all
}

// CT is a container as a test sees it.
type CT struct {
	VMID     int
	Node     string
	Config   map[string]string
	Status   string // "running" or "stopped"
	Console  string // console output so far (RealLXC)
	ExitCode int    // exit status of init's last run (RealLXC)
}

// Server is a simulated Proxmox VE cluster behind one API endpoint.
type Server struct {
	opts     Options
	dir      string
	ownDir   bool
	dirErr   error
	secret   []byte
	storages []*storageCfg
	routes   []*endpoint

	ctx    context.Context // cancelled by Close; parent of task contexts
	cancel context.CancelFunc

	mu          sync.Mutex
	tokens      map[string]Token
	users       map[string]User
	cts         map[int]*container
	tasks       map[string]*task
	requests    []request
	uploads     int
	dropNext    int64
	corruptNext bool
	failNext    map[string]string
	faults      []*fault // FailNextRequests, ResetNextRequests
	pidSeq      uint32
	life        lifeState // volumes, node load, storage nodes, DNS (lifecycle.go)
	cow         cowState  // base trees and linked clones' overlays (clone.go)

	// hostBridges maps Options.Bridges to Linux bridges (RealLXC);
	// ownBridges are those the simulator created.
	hostBridges map[string]string
	ownBridges  []string

	closed    bool // guarded by mu; no worker starts once set
	workers   sync.WaitGroup
	srv       *http.Server
	ln        net.Listener
	url       string
	fp        string
	closeOnce sync.Once
}

type request struct{ method, path string }

// New configures a simulator; Start makes it listen.
func New(o Options) *Server {
	if o.Version == "" {
		o.Version = "9.1.1"
	}
	if len(o.Nodes) == 0 {
		o.Nodes = []string{"pve1", "pve2"}
	}
	if o.EntryNode == "" {
		o.EntryNode = o.Nodes[0]
	}
	if o.TicketLifetime == 0 {
		o.TicketLifetime = 2 * time.Hour
	}
	if o.Bridges == nil {
		o.Bridges = []string{"vmbr0"}
	}
	s := &Server{
		opts: o, dir: o.Dir, storages: defaultStorages(),
		tokens: map[string]Token{}, users: map[string]User{}, cts: map[int]*container{},
		tasks: map[string]*task{}, failNext: map[string]string{}, dropNext: -1,
		pidSeq: 4000,
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.secret = make([]byte, 32)
	rand.Read(s.secret)
	if s.dir == "" {
		s.dir, s.dirErr = os.MkdirTemp("", "pvesim-")
		s.ownDir = true
	} else if abs, err := filepath.Abs(s.dir); err == nil {
		// LXC paths (-P) of real containers must not depend on the
		// working directory.
		s.dir = abs
	}
	s.routes = s.buildRoutes()
	return s
}

// Start creates the node directories and serves HTTPS on 127.0.0.1 at a
// random port with a fresh self-signed certificate.
func (s *Server) Start() error {
	if s.dirErr != nil {
		return fmt.Errorf("pvesim: creating the simulator's directory: %w", s.dirErr)
	}
	if s.opts.RealLXC {
		if err := pvelxc.Check(); err != nil {
			return fmt.Errorf("pvesim: RealLXC: %w", err)
		}
		if err := s.setupBridges(); err != nil {
			s.removeBridges()
			return fmt.Errorf("pvesim: RealLXC: %w", err)
		}
	}
	found := false
	for _, n := range s.opts.Nodes {
		found = found || n == s.opts.EntryNode
		for _, d := range []string{"local/template/cache", "local/template/iso", "tmp", "lxc"} {
			if err := os.MkdirAll(filepath.Join(s.dir, n, d), 0o755); err != nil {
				return fmt.Errorf("pvesim: %w", err)
			}
		}
	}
	if !found {
		return fmt.Errorf("pvesim: entry node %q is not one of %v", s.opts.EntryNode, s.opts.Nodes)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "shared", "template", "cache"), 0o755); err != nil {
		return fmt.Errorf("pvesim: %w", err)
	}
	cert, fp, err := selfSigned()
	if err != nil {
		return fmt.Errorf("pvesim: certificate: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("pvesim: listen: %w", err)
	}
	s.ln, s.fp = ln, fp
	s.url = "https://" + ln.Addr().String()
	s.srv = &http.Server{
		Handler: http.HandlerFunc(s.serveHTTP),
		// pveproxy speaks HTTP/1.1 only; hijacking (for reason phrases
		// and connection resets) needs it too.
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:          log.New(io.Discard, "", 0),
		ReadHeaderTimeout: 30 * time.Second,
	}
	go s.srv.Serve(tls.NewListener(ln, s.srv.TLSConfig))
	return nil
}

// Close stops the server, interrupts running tasks, stops real containers
// and, when the simulator made its own directory, removes it.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.srv != nil {
			s.srv.Close()
		}
		s.cancel()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.workers.Wait()
		s.mu.Lock()
		var lxcs []*pvelxc.Container
		for _, ct := range s.cts {
			if ct.lxc != nil {
				lxcs = append(lxcs, ct.lxc)
			}
		}
		s.mu.Unlock()
		s.unmountClones()
		for _, l := range lxcs {
			l.Destroy()
		}
		s.removeBridges()
		if s.ownDir && s.dir != "" {
			os.RemoveAll(s.dir)
		}
	})
}

// URL is "https://127.0.0.1:PORT"; the API is below /api2/json.
func (s *Server) URL() string { return s.url }

// Fingerprint is the SHA-256 fingerprint of the certificate as Proxmox
// shows it: uppercase hex bytes joined by colons.
func (s *Server) Fingerprint() string { return s.fp }

// Requests counts the requests seen with method and a path (after
// /api2/json) starting with pathPrefix; an empty method counts all methods.
func (s *Server) Requests(method, pathPrefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if (method == "" || r.method == method) && strings.HasPrefix(r.path, pathPrefix) {
			n++
		}
	}
	return n
}

// RequestsExact counts the requests seen with method and exactly path
// (after /api2/json, percent-decoded, without the query string, which is
// never recorded); an empty method counts all methods. Unlike Requests,
// "/nodes/pve1/lxc" counts the container list and not the requests below
// it.
func (s *Server) RequestsExact(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if (method == "" || r.method == method) && r.path == path {
			n++
		}
	}
	return n
}

// LXCPath is the LXC path (lxc-start -P) under which node's real containers
// (Options.RealLXC) live, each in a directory named by its VMID as Proxmox
// keeps them in /var/lib/lxc/<vmid>: `lxc-attach -n <vmid> -P <path>` and
// lxc-info work on them. It is absolute, and "" for a node the cluster does
// not have.
func (s *Server) LXCPath(node string) string {
	if !s.isNode(node) {
		return ""
	}
	return filepath.Join(s.dir, node, "lxc")
}

// Container returns a container's state for inspection; ok is false when
// node has no container vmid.
func (s *Server) Container(node string, vmid int) (*CT, bool) {
	s.mu.Lock()
	ct := s.cts[vmid]
	s.mu.Unlock()
	if ct == nil || ct.node != node {
		return nil, false
	}
	return ct.snapshot(s), true
}

// Containers lists the VMIDs of node's containers, in order.
func (s *Server) Containers(node string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for id, ct := range s.cts {
		if ct.node == node {
			out = append(out, id)
		}
	}
	sort.Ints(out)
	return out
}

func selfSigned() (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "pvesim", Organization: []string{"PVE Cluster Node"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	sum := sha256.Sum256(der)
	hx := strings.ToUpper(hex.EncodeToString(sum[:]))
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(hx); i += 2 {
		parts = append(parts, hx[i:i+2])
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, strings.Join(parts, ":"), nil
}

// call is one API method invocation.
type call struct {
	r     *http.Request
	who   *principal
	p     params
	node  string // node that runs the method: {node} when proxied, else the entry node
	entry string
	tmp   string // upload: the temporary file
	total int    // "total" of the answer, when set
}

// endpoint is one method of the API tree (pve-apischema.json).
type endpoint struct {
	method  string
	segs    []string
	proxyto bool
	perm    func(c *call) *apiError
	schema  schema
	handle  func(c *call) (any, error)
}

func (s *Server) buildRoutes() []*endpoint {
	vmPerm := func(priv string) func(c *call) *apiError {
		return func(c *call) *apiError { return c.who.check("/vms/"+c.p.get("vmid"), priv) }
	}
	storAny := func(c *call) *apiError {
		return c.who.checkAny("/storage/"+c.p.get("storage"), "Datastore.Audit", "Datastore.AllocateSpace")
	}
	ep := func(method, path string, proxy bool, perm func(*call) *apiError, sc schema, h func(*call) (any, error)) *endpoint {
		return &endpoint{method: method, segs: strings.Split(strings.Trim(path, "/"), "/"), proxyto: proxy, perm: perm, schema: sc, handle: h}
	}
	return []*endpoint{
		ep("GET", "/version", false, nil, schema{}, s.version),
		ep("POST", "/access/ticket", false, nil, ticketSchema, s.createTicket),
		ep("GET", "/nodes", false, nil, schema{}, s.nodesIndex),
		ep("GET", "/nodes/{node}/status", true, func(c *call) *apiError {
			return c.who.check("/nodes/"+c.p.get("node"), "Sys.Audit")
		}, schema{"node": nodeParam()}, s.nodeStatus),
		ep("GET", "/cluster/nextid", false, nil, schema{"vmid": integer().between("100", "999999999").fmtd(fmtVMID)}, s.nextID),
		ep("GET", "/nodes/{node}/storage", true, nil, storageIndexSchema, s.storageIndexOnNode),
		ep("GET", "/nodes/{node}/storage/{storage}/status", true, storAny, storageStatusSchema, s.storageStatusOnNode),
		ep("POST", "/nodes/{node}/storage/{storage}/upload", false, func(c *call) *apiError {
			return c.who.check("/storage/"+c.p.get("storage"), "Datastore.AllocateTemplate")
		}, uploadSchema, s.upload),
		ep("GET", "/nodes/{node}/storage/{storage}/content", true, storAny, contentIndexSchema, s.contentIndexWithVolumes),
		ep("GET", "/nodes/{node}/storage/{storage}/content/{volume...}", true, nil, contentVolumeSchema, s.contentInfo),
		ep("DELETE", "/nodes/{node}/storage/{storage}/content/{volume...}", true, nil, contentDeleteSchema, s.contentDeleteWithBackups),
		ep("GET", "/nodes/{node}/tasks/{upid}/status", true, nil, upidSchema, s.taskStatus),
		ep("GET", "/nodes/{node}/tasks/{upid}/log", true, nil, taskLogSchema, s.taskLog),
		ep("DELETE", "/nodes/{node}/tasks/{upid}", true, nil, upidSchema, s.taskStop),
		ep("GET", "/nodes/{node}/lxc", true, nil, schema{"node": nodeParam()}, s.lxcIndex),
		ep("POST", "/nodes/{node}/lxc", true, nil, lxcCreateSchema(s.atLeast(9, 1)), s.lxcCreate),
		ep("DELETE", "/nodes/{node}/lxc/{vmid}", true, vmPerm("VM.Allocate"), lxcDestroySchema, s.lxcDestroy),
		ep("GET", "/nodes/{node}/lxc/{vmid}/status/current", true, vmPerm("VM.Audit"), vmidSchema, s.lxcStatus),
		ep("POST", "/nodes/{node}/lxc/{vmid}/status/start", true, vmPerm("VM.PowerMgmt"), lxcStartSchema, s.lxcStart),
		ep("POST", "/nodes/{node}/lxc/{vmid}/status/stop", true, vmPerm("VM.PowerMgmt"), lxcStopSchema, s.lxcStop),
		ep("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown", true, vmPerm("VM.PowerMgmt"), lxcShutdownSchema, s.lxcShutdown),
		ep("GET", "/nodes/{node}/lxc/{vmid}/config", true, vmPerm("VM.Audit"), lxcConfigGetSchema, s.lxcConfigGet),
		ep("GET", "/nodes/{node}/lxc/{vmid}/interfaces", true, vmPerm("VM.Audit"), vmidSchema, s.lxcInterfaces),
		// Containers that live on (lifecycle.go).
		ep("GET", "/cluster/resources", false, nil, clusterResourcesSchema, s.clusterResources),
		ep("GET", "/nodes/{node}/dns", true, func(c *call) *apiError {
			return c.who.check("/nodes/"+c.p.get("node"), "Sys.Audit")
		}, nodeDNSSchema, s.nodeDNS),
		ep("POST", "/nodes/{node}/vzdump", true, nil, vzdumpSchema, s.vzdump),
		ep("GET", "/nodes/{node}/vzdump/extractconfig", true, nil, extractConfigSchema, s.extractConfig),
		ep("POST", "/nodes/{node}/lxc/{vmid}/move_volume", true, vmPerm("VM.Config.Disk"), moveVolumeSchema, s.lxcMoveVolume),
		ep("POST", "/nodes/{node}/lxc/{vmid}/migrate", true, vmPerm("VM.Migrate"), migrateSchema, s.lxcMigrate),
		// Templates and linked clones (clone.go).
		ep("POST", "/nodes/{node}/lxc/{vmid}/template", true, vmPerm("VM.Allocate"), vmidSchema, s.lxcTemplate),
		ep("POST", "/nodes/{node}/lxc/{vmid}/clone", true, clonePerm, lxcCloneSchema, s.lxcClone),
		ep("PUT", "/nodes/{node}/lxc/{vmid}/config", true, func(c *call) *apiError {
			return c.who.checkAny("/vms/"+c.p.get("vmid"), "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options")
		}, lxcConfigPutSchema(s.atLeast(9, 1)), s.lxcConfigPutBinds),
	}
}

// route finds the method for a path; a "{name...}" segment takes the rest
// of the path, slashes included (the content subclass's fragmentDelimiter
// ” in pve-storage Status.pm L33-38).
func (s *Server) route(method, rel string) (*endpoint, map[string]string) {
	segs := strings.Split(strings.TrimRight(strings.TrimPrefix(rel, "/"), "/"), "/")
	for _, e := range s.routes {
		if e.method != method {
			continue
		}
		if uri, ok := matchSegs(e.segs, segs); ok {
			return e, uri
		}
	}
	return nil, nil
}

func matchSegs(pat, segs []string) (map[string]string, bool) {
	uri := map[string]string{}
	for i, p := range pat {
		if strings.HasSuffix(p, "...}") {
			if i >= len(segs) {
				return nil, false
			}
			uri[p[1:len(p)-4]] = strings.Join(segs[i:], "/")
			return uri, true
		}
		if i >= len(segs) || segs[i] == "" {
			return nil, false
		}
		if strings.HasPrefix(p, "{") {
			uri[p[1:len(p)-1]] = segs[i]
		} else if p != segs[i] {
			return nil, false
		}
	}
	return uri, len(pat) == len(segs)
}

var absURI = regexp.MustCompile(`^/api2/+([a-z][a-z0-9]+)(/.*)?$`)

// limitMaxPost is pve-http-server's $limit_max_post (512 KiB since
// libpve-http-server-perl 5.2.1) for non-upload bodies.
const limitMaxPost = 512 * 1024

// serveHTTP is pve-http-server's request path: transport checks, then
// authentication (auth_handler), then the body, then the API method.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
	default:
		s.fail(w, r, &apiError{code: http.StatusNotImplemented, msg: "method '" + r.Method + "' not available", raw: true})
		return
	}
	if len(r.TransferEncoding) > 0 {
		msg := "chunked transfer encoding not supported"
		if !strings.EqualFold(r.TransferEncoding[0], "chunked") {
			msg = "Unknown transfer encoding '" + r.TransferEncoding[0] + "'"
		}
		s.fail(w, r, &apiError{code: http.StatusNotImplemented, msg: msg, raw: true, rawBody: msg})
		return
	}
	path := r.URL.Path
	if !strings.HasPrefix(path, "/api2") {
		msg := fmt.Sprintf("no such file '%s'\n", path)
		s.fail(w, r, &apiError{code: http.StatusNotImplemented, msg: msg, raw: true, rawBody: msg})
		return
	}
	m := absURI.FindStringSubmatch(path)
	if m == nil {
		s.fail(w, r, &apiError{code: http.StatusNotImplemented, msg: "no such uri", raw: true, rawBody: "no such uri"})
		return
	}
	rel := m[2]
	if rel == "" {
		rel = "/"
	}
	s.mu.Lock()
	s.requests = append(s.requests, request{r.Method, rel})
	s.mu.Unlock()
	if m[1] != "json" {
		msg := fmt.Sprintf("no formatter for uri %s, %s", rel, m[1])
		s.fail(w, r, &apiError{code: http.StatusNotImplemented, msg: msg, raw: true, rawBody: msg})
		return
	}

	who, isUpload, aerr := s.authenticate(r, rel)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if s.injectFault(w, r, rel) {
		return
	}
	if r.ContentLength > 0 {
		if r.Method != http.MethodPut && r.Method != http.MethodPost {
			s.fail(w, r, &apiError{code: http.StatusNotImplemented, msg: "Unexpected content for method '" + r.Method + "'", raw: true, rawBody: "Unexpected content for method '" + r.Method + "'"})
			return
		}
		if isUpload {
			s.serveUpload(w, r, who, rel)
			return
		}
		if r.ContentLength > limitMaxPost {
			s.fail(w, r, &apiError{code: http.StatusNotImplemented, msg: "for data too large", raw: true, rawBody: "for data too large"})
			return
		}
		ct, _ := parseContentType(r.Header.Get("Content-Type"))
		if ct != "" && ct != "application/x-www-form-urlencoded" && ct != "application/json" {
			msg := "upload 'Content-Type '" + r.Header.Get("Content-Type") + "' not implemented"
			s.fail(w, r, &apiError{code: 506, msg: msg, raw: true, rawBody: msg})
			return
		}
	}
	p := newParams()
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		body, err := io.ReadAll(io.LimitReader(r.Body, limitMaxPost))
		if err != nil {
			dropConnection(w, false)
			return
		}
		if aerr := decodeBody(p, r, body); aerr != nil {
			s.fail(w, r, aerr)
			return
		}
	}
	q := newParams()
	decodeURLEncoded(q, r.URL.RawQuery)
	for k, v := range q.v {
		p.v[k] = v
		if b, ok := q.bad[k]; ok {
			p.bad[k] = b
		} else {
			delete(p.bad, k)
		}
	}
	s.handleAPI(w, r, who, rel, p, "")
}

// fail answers an error, after Options.AuthDelay for failed logins.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.delay && s.opts.AuthDelay > 0 {
		select {
		case <-time.After(s.opts.AuthDelay):
		case <-s.ctx.Done():
		}
	}
	drain(w, r, r.ContentLength)
	writeError(w, e)
}

// handleAPI is pve-http-server handle_api2_request plus pve-manager
// HTTPServer.pm rest_handler: find the method, merge URI parameters, check
// permissions, resolve proxyto, validate, run.
func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request, who *principal, rel string, p params, tmp string) {
	e, uri := s.route(r.Method, rel)
	if e == nil {
		s.fail(w, r, &apiError{code: http.StatusNotImplemented, msg: fmt.Sprintf("Method '%s %s' not implemented", r.Method, rel)})
		return
	}
	keys := make([]string, 0, len(uri))
	for k := range uri {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if p.has(k) && p.get(k) != uri[k] {
			s.fail(w, r, paramErr1(k, "duplicate parameter (already defined in URI) with conflicting values!"))
			return
		}
		p.set(k, uri[k])
	}
	c := &call{r: r, who: who, p: p, node: s.opts.EntryNode, entry: s.opts.EntryNode, tmp: tmp}
	if e.perm != nil && who != nil {
		if err := e.perm(c); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if e.proxyto {
		node := p.get("node")
		if node != "localhost" && node != c.entry {
			if !s.isNode(node) {
				s.fail(w, r, hostLookupErr(node))
				return
			}
			c.node = node
		}
	}
	if err := e.schema.validate(p); err != nil {
		s.fail(w, r, err)
		return
	}
	data, err := e.handle(c)
	if err != nil {
		s.fail(w, r, asAPIError(err))
		return
	}
	writeJSON(w, data, &c.total)
}

// atLeast reports whether the simulated pve-manager version is at least
// major.minor; behaviours that arrived with a release depend on it.
func (s *Server) atLeast(major, minor int) bool {
	parts := strings.SplitN(s.opts.Version, ".", 3)
	ma, _ := strconv.Atoi(parts[0])
	mi := 0
	if len(parts) > 1 {
		mi, _ = strconv.Atoi(parts[1])
	}
	return ma > major || ma == major && mi >= minor
}

func (s *Server) isNode(name string) bool {
	for _, n := range s.opts.Nodes {
		if n == name {
			return true
		}
	}
	return false
}

func (s *Server) nodeIP(node string) string {
	for i, n := range s.opts.Nodes {
		if n == node {
			return fmt.Sprintf("10.10.10.%d", i+1)
		}
	}
	return ""
}

// hostLookupErr is what proxying to an unknown node ends in
// (PVE::Cluster::remote_node_ip falls back to a DNS lookup).
func hostLookupErr(node string) *apiError {
	return die("hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", node, node)
}

func (s *Server) task(upid string) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[upid]
}

func waitDone(t *task, seconds int) bool {
	select {
	case <-t.done:
		return true
	case <-time.After(time.Duration(seconds) * time.Second):
		return false
	}
}

// version is pve-manager API2.pm version.
func (s *Server) version(c *call) (any, error) {
	release := s.opts.Version
	if parts := strings.SplitN(release, ".", 3); len(parts) >= 2 {
		release = parts[0] + "." + parts[1]
	}
	sum := sha1.Sum([]byte(s.opts.Version))
	return map[string]any{"version": s.opts.Version, "release": release, "repoid": hex.EncodeToString(sum[:4])}, nil
}

func (s *Server) nodesIndex(c *call) (any, error) {
	out := []map[string]any{}
	for _, n := range s.opts.Nodes {
		out = append(out, map[string]any{
			"node": n, "status": "online", "type": "node", "id": "node/" + n, "level": "",
			"ssl_fingerprint": s.fp, "maxcpu": 4, "maxmem": int64(16) << 30, "mem": int64(2) << 30,
			"cpu": 0.01, "uptime": int64(time.Since(startOfDay()).Seconds()),
		})
	}
	return out, nil
}

// nodeStatus is a small part of pve-manager API2/Nodes.pm status.
func (s *Server) nodeStatus(c *call) (any, error) {
	v, _ := s.version(c)
	ver := v.(map[string]any)
	return map[string]any{
		"pveversion": fmt.Sprintf("pve-manager/%s/%s", ver["version"], ver["repoid"]),
		"kversion":   "Linux 6.17.2-1-pve #1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1 (pvesim)",
		"uptime":     int64(time.Since(startOfDay()).Seconds()),
		"cpu":        0.01,
		"cpuinfo":    map[string]any{"cpus": 4, "cores": 4, "sockets": 1, "model": "pvesim"},
		"memory":     map[string]any{"total": int64(16) << 30, "used": int64(2) << 30, "free": int64(14) << 30},
	}, nil
}

func startOfDay() time.Time {
	y, m, d := time.Now().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.Local)
}

// nextID is pve-manager API2/Cluster.pm nextid. The VMID comes back as a
// string: Perl used the loop counter as a hash key, which makes JSON encode
// it as one.
func (s *Server) nextID(c *call) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := c.p.get("vmid"); v != "" {
		n, _ := strconv.Atoi(v)
		if _, used := s.cts[n]; used {
			return nil, paramErr1("vmid", fmt.Sprintf("VM %d already exists", n))
		}
		return v, nil
	}
	for i := 100; i < 1000000; i++ {
		if _, used := s.cts[i]; !used {
			return strconv.Itoa(i), nil
		}
	}
	return nil, errors.New("unable to get any free VMID in range [100, 1000000]")
}
