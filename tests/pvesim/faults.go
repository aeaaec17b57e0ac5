package pvesim

import (
	"net/http"
	"strings"
)

// fault is an injected failure waiting for the requests it matches.
type fault struct {
	method, prefix string
	status         int // 0: reset the connection
	left           int
}

// FailNextRequests makes the next n authenticated requests with method
// (empty: any) and a path (after /api2/json) starting with pathPrefix fail
// with status, in the shape Proxmox answers it:
//
//   - 594 to 599 are pveproxy failing to pass the call on, to the node it
//     is proxied to or to pvedaemon on the entry node: AnyEvent::HTTP
//     reports such failures with these statuses and the system error as
//     reason, and pveproxy forwards them as they are, with no body
//     (pve-http-server AnyEvent.pm proxy_request). 595 is a failed
//     connect (here "Connection refused": the node's pveproxy or
//     pvedaemon is down; "No route to host" and "Connection timed out"
//     are others), 596 a node that accepted but did not answer within
//     proxy_request's 30 s ("Connection timed out").
//   - Any other status is an API handler's exception carrying that code
//     (PVE::Exception code): the status text as reason phrase and message,
//     body {"data":null,"message":"...\n"} (handle_api2_request with the
//     JSON formatter).
//
// Faults queue in the order given; each request takes at most one.
func (s *Server) FailNextRequests(method, pathPrefix string, status, n int) {
	s.addFault(&fault{method: method, prefix: pathPrefix, status: status, left: n})
}

// ResetNextRequests makes the next n authenticated requests with method
// (empty: any) and a path starting with pathPrefix end in a connection
// reset before any answer, as when a pveproxy worker dies or the service
// restarts under the request.
func (s *Server) ResetNextRequests(method, pathPrefix string, n int) {
	s.addFault(&fault{method: method, prefix: pathPrefix, left: n})
}

func (s *Server) addFault(f *fault) {
	if f.left <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// takeFault returns the fault a request meets, if any, and counts it.
func (s *Server) takeFault(method, rel string) *fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if (f.method == "" || f.method == method) && strings.HasPrefix(rel, f.prefix) {
			f.left--
			if f.left == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}

// proxyReasons are AnyEvent::HTTP's reasons for its statuses as pveproxy
// users see them.
var proxyReasons = map[int]string{
	594: "Proxy handshake failed",
	595: "Connection refused",
	596: "Connection timed out",
	597: "Connection reset by peer",
	598: "Request aborted",
	599: "Internal error",
}

// injectFault answers a request that meets a fault; it reports whether it
// did.
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request, rel string) bool {
	f := s.takeFault(r.Method, rel)
	switch {
	case f == nil:
		return false
	case f.status == 0:
		dropConnection(w, true)
	case f.status >= 594 && f.status <= 599:
		msg := proxyReasons[f.status]
		s.fail(w, r, &apiError{code: f.status, msg: msg, raw: true})
	default:
		msg := http.StatusText(f.status)
		if msg == "" {
			msg = "simulated failure"
		}
		s.fail(w, r, &apiError{code: f.status, msg: msg + "\n"})
	}
	return true
}
