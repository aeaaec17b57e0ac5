package main

import (
	"encoding/binary"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A DHCPv4 client (RFC 2131) of the smallest useful kind: DISCOVER, REQUEST,
// renewals. Proxmox 7/8 write no network configuration into an unmanaged
// container, and slim images carry no DHCP client, so the shim brings one.
// Replies are asked for by broadcast, so a plain UDP socket bound to eth0
// receives them before the interface has an address.

const (
	dhcpDiscover = 1
	dhcpOffer    = 2
	dhcpRequest  = 3
	dhcpAck      = 5
	dhcpNak      = 6

	optSubnet    = 1
	optRouter    = 3
	optDNS       = 6
	optHostname  = 12
	optDomain    = 15
	optRequested = 50
	optLease     = 51
	optMsgType   = 53
	optServerID  = 54
	optParams    = 55
	optT1        = 58
	optEnd       = 255
)

var magicCookie = []byte{99, 130, 83, 99}

type lease struct {
	ip, router, server ipv4
	prefix             int
	dns                []ipv4
	domain             string
	duration, t1       time.Duration
}

type dhcpClient struct {
	l    *link
	fd   int
	xid  uint32
	host string
}

func newDHCPClient(l *link) (*dhcpClient, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	for _, o := range []int{unix.SO_BROADCAST, unix.SO_REUSEADDR} {
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 1)
		}
	}
	if err == nil {
		err = unix.BindToDevice(fd, l.name)
	}
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: 68})
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	host, _ := os.Hostname()
	return &dhcpClient{l: l, fd: fd, host: host}, nil
}

func (c *dhcpClient) close() { unix.Close(c.fd) }

func (c *dhcpClient) message(typ byte, ciaddr ipv4, opts ...[]byte) []byte {
	m := make([]byte, 240, 300)
	m[0], m[1], m[2] = 1, 1, 6
	binary.BigEndian.PutUint32(m[4:], c.xid)
	binary.BigEndian.PutUint16(m[10:], 0x8000) // broadcast replies
	copy(m[12:16], ciaddr[:])
	copy(m[28:44], c.l.mac)
	copy(m[236:240], magicCookie)
	m = append(m, optMsgType, 1, typ)
	m = append(m, optParams, 6, optSubnet, optRouter, optDNS, optDomain, optLease, optT1)
	if c.host != "" && len(c.host) < 64 {
		m = append(m, optHostname, byte(len(c.host)))
		m = append(m, c.host...)
	}
	for _, o := range opts {
		m = append(m, o...)
	}
	return append(m, optEnd)
}

func option(code byte, data []byte) []byte { return append([]byte{code, byte(len(data))}, data...) }

// exchange broadcasts msg until a reply of one of the wanted types comes,
// retrying with backoff until the deadline.
func (c *dhcpClient) exchange(msg []byte, deadline time.Time, want ...byte) (byte, map[byte][]byte, ipv4, error) {
	dst := &unix.SockaddrInet4{Port: 67, Addr: [4]byte{255, 255, 255, 255}}
	buf := make([]byte, 1500)
	for wait := time.Second; time.Now().Before(deadline); wait = min(2*wait, 8*time.Second) {
		if err := unix.Sendto(c.fd, msg, 0, dst); err != nil {
			return 0, nil, ipv4{}, err
		}
		until := time.Now().Add(wait)
		if until.After(deadline) {
			until = deadline
		}
		for {
			left := time.Until(until)
			if left <= 0 {
				break
			}
			tv := unix.NsecToTimeval(left.Nanoseconds())
			unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				break // timeout: send again
			}
			typ, opts, yiaddr, ok := c.parse(buf[:n])
			if !ok {
				continue
			}
			for _, w := range want {
				if typ == w {
					return typ, opts, yiaddr, nil
				}
			}
		}
	}
	return 0, nil, ipv4{}, errors.New("no answer from a DHCP server")
}

func (c *dhcpClient) parse(b []byte) (byte, map[byte][]byte, ipv4, bool) {
	if len(b) < 240 || b[0] != 2 || binary.BigEndian.Uint32(b[4:]) != c.xid || string(b[236:240]) != string(magicCookie) {
		return 0, nil, ipv4{}, false
	}
	opts := map[byte][]byte{}
	for o := b[240:]; len(o) > 0; {
		code := o[0]
		if code == optEnd {
			break
		}
		if code == 0 {
			o = o[1:]
			continue
		}
		if len(o) < 2 || len(o) < 2+int(o[1]) {
			break
		}
		opts[code] = o[2 : 2+int(o[1])]
		o = o[2+int(o[1]):]
	}
	t := opts[optMsgType]
	if len(t) != 1 {
		return 0, nil, ipv4{}, false
	}
	var yiaddr ipv4
	copy(yiaddr[:], b[16:20])
	return t[0], opts, yiaddr, true
}

func (c *dhcpClient) newXID() {
	var b [4]byte
	if _, err := unix.Getrandom(b[:], 0); err != nil {
		binary.BigEndian.PutUint32(b[:], uint32(time.Now().UnixNano()))
	}
	c.xid = binary.BigEndian.Uint32(b[:])
}

// acquire runs DISCOVER/OFFER/REQUEST/ACK until the deadline.
func (c *dhcpClient) acquire(deadline time.Time) (*lease, error) {
	for time.Now().Before(deadline) {
		c.newXID()
		_, offer, yiaddr, err := c.exchange(c.message(dhcpDiscover, ipv4{}), deadline, dhcpOffer)
		if err != nil {
			return nil, err
		}
		typ, ack, yiaddr, err := c.exchange(c.message(dhcpRequest, ipv4{}, option(optRequested, yiaddr[:]), option(optServerID, offer[optServerID])),
			deadline, dhcpAck, dhcpNak)
		if err != nil {
			return nil, err
		}
		if typ == dhcpAck {
			return leaseFrom(yiaddr, ack), nil
		}
	}
	return nil, errors.New("no lease before the deadline")
}

// renew asks for the same address again (RENEWING, by broadcast).
func (c *dhcpClient) renew(l *lease, deadline time.Time) (*lease, error) {
	c.newXID()
	typ, ack, yiaddr, err := c.exchange(c.message(dhcpRequest, l.ip), deadline, dhcpAck, dhcpNak)
	if err != nil {
		return nil, err
	}
	if typ != dhcpAck {
		return nil, errors.New("the DHCP server refused the renewal")
	}
	return leaseFrom(yiaddr, ack), nil
}

func ip4(b []byte) (ip ipv4) {
	copy(ip[:], b)
	return ip
}

func leaseFrom(ip ipv4, opts map[byte][]byte) *lease {
	l := &lease{ip: ip, prefix: 24, duration: time.Hour}
	if m := opts[optSubnet]; len(m) == 4 {
		l.prefix = prefixLen(ip4(m))
	}
	if r := opts[optRouter]; len(r) >= 4 {
		l.router = ip4(r)
	}
	if s := opts[optServerID]; len(s) == 4 {
		l.server = ip4(s)
	}
	for d := opts[optDNS]; len(d) >= 4; d = d[4:] {
		l.dns = append(l.dns, ip4(d))
	}
	l.domain = string(opts[optDomain])
	if v := opts[optLease]; len(v) == 4 {
		l.duration = time.Duration(binary.BigEndian.Uint32(v)) * time.Second
	}
	l.t1 = l.duration / 2
	if v := opts[optT1]; len(v) == 4 {
		l.t1 = time.Duration(binary.BigEndian.Uint32(v)) * time.Second
	}
	return l
}
