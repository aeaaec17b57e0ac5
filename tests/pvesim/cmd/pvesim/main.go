// Command pvesim runs the Proxmox VE API simulator (package pvesim) for
// manual trials:
//
//	go run ./tests/pvesim/cmd/pvesim -token 'root@pam!sim=secret'
//
// It prints the URL and certificate fingerprint and serves until
// interrupted. Try it with curl:
//
//	curl -k -H 'Authorization: PVEAPIToken=root@pam!sim=secret' URL/api2/json/version
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pve-image/pve-image/tests/pvesim"
)

func main() {
	var (
		version = flag.String("version", "9.1.1", "pve-manager version GET /version reports")
		nodes   = flag.String("nodes", "pve1,pve2", "cluster nodes, comma-separated")
		entry   = flag.String("entry", "", "node that receives the requests (default: the first)")
		dir     = flag.String("dir", "", "directory for storages and containers (default: a temporary one, removed on exit)")
		token   = flag.String("token", "root@pam!sim=secret", "API token USER@REALM!NAME=SECRET with all privileges; empty for none")
		user    = flag.String("user", "root@pam:password", "user NAME:PASSWORD with all privileges; empty for none")
		delay   = flag.Duration("auth-delay", 0, "delay of failed-authentication answers (Proxmox: 3s)")
		realLXC = flag.Bool("real-lxc", false, "run real unprivileged LXC containers (root, LXC)")
		bridges = flag.String("bridges", "vmbr0", "bridges that exist, comma-separated")
	)
	flag.Parse()
	s := pvesim.New(pvesim.Options{
		Version: *version, Nodes: split(*nodes), EntryNode: *entry, Dir: *dir,
		AuthDelay: *delay, RealLXC: *realLXC, Bridges: split(*bridges),
	})
	if *token != "" {
		i := strings.LastIndexByte(*token, '=')
		if i < 0 {
			fmt.Fprintln(os.Stderr, "pvesim: -token must be USER@REALM!NAME=SECRET")
			os.Exit(2)
		}
		s.AddToken(pvesim.Token{ID: (*token)[:i], Secret: (*token)[i+1:], Privs: []string{"*"}})
	}
	if *user != "" {
		name, pw, _ := strings.Cut(*user, ":")
		s.AddUser(pvesim.User{Name: name, Password: pw, Privs: []string{"*"}})
	}
	if err := s.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer s.Close()
	fmt.Printf("URL:         %s/api2/json\nFingerprint: %s\n", s.URL(), s.Fingerprint())
	for _, n := range split(*nodes) {
		fmt.Printf("templates of %s: %s\n", n, s.StoragePath(n, "local")+"/template/cache")
	}
	fmt.Printf("shared templates: %s\n", s.StoragePath("", "shared")+"/template/cache")
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	<-c
	fmt.Println("stopping")
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
}

func split(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
