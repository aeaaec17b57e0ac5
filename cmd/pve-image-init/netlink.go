package main

import (
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A few rtnetlink requests and ioctls, written out by hand: the netlink
// libraries, and even Go's net package, would make the shim too big to live
// in every template (2 MiB at most).

type ipv4 [4]byte

func (ip ipv4) String() string {
	return strconv.Itoa(int(ip[0])) + "." + strconv.Itoa(int(ip[1])) + "." + strconv.Itoa(int(ip[2])) + "." + strconv.Itoa(int(ip[3]))
}

func (ip ipv4) isZero() bool { return ip == ipv4{} }

// link is a network interface.
type link struct {
	name  string
	index int
	mac   []byte
}

// findLink reads an interface's index and MAC address from sysfs.
func findLink(name string) (*link, error) {
	idx, err := os.ReadFile("/sys/class/net/" + name + "/ifindex")
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(idx)))
	if err != nil {
		return nil, err
	}
	l := &link{name: name, index: n}
	if addr, err := os.ReadFile("/sys/class/net/" + name + "/address"); err == nil {
		for _, h := range strings.Split(strings.TrimSpace(string(addr)), ":") {
			b, err := strconv.ParseUint(h, 16, 8)
			if err != nil {
				return nil, errors.New(name + ": bad MAC address")
			}
			l.mac = append(l.mac, byte(b))
		}
	}
	return l, nil
}

func nlRequest(typ uint16, flags uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	msg = append(msg, body...)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return syscall.Errno(-code)
			}
		}
	}
	return nil
}

func attr(typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	b := make([]byte, (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1))
	binary.NativeEndian.PutUint16(b[0:], uint16(l))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], data)
	return b
}

func structBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// up sets the interface up.
func (l *link) up() error {
	msg := unix.IfInfomsg{Family: unix.AF_UNSPEC, Index: int32(l.index), Flags: unix.IFF_UP, Change: unix.IFF_UP}
	return nlRequest(unix.RTM_NEWLINK, 0, structBytes(&msg))
}

// addAddr adds an IPv4 address with its prefix length.
func (l *link) addAddr(ip ipv4, prefix int) error {
	msg := unix.IfAddrmsg{Family: unix.AF_INET, Prefixlen: uint8(prefix), Index: uint32(l.index)}
	bc := ip
	for i := range bc {
		bc[i] |= ^prefixMask(prefix)[i]
	}
	body := append(structBytes(&msg), attr(unix.IFA_LOCAL, ip[:])...)
	body = append(body, attr(unix.IFA_ADDRESS, ip[:])...)
	body = append(body, attr(unix.IFA_BROADCAST, bc[:])...)
	return nlRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, body)
}

func prefixMask(prefix int) ipv4 {
	var m ipv4
	binary.BigEndian.PutUint32(m[:], ^uint32(0)<<(32-prefix))
	return m
}

func prefixLen(mask ipv4) int {
	n := 0
	for v := binary.BigEndian.Uint32(mask[:]); v&(1<<31) != 0; v <<= 1 {
		n++
	}
	return n
}

// addDefaultRoute routes everything through gw.
func (l *link) addDefaultRoute(gw ipv4) error {
	msg := unix.RtMsg{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_DHCP, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST}
	idx := make([]byte, 4)
	binary.NativeEndian.PutUint32(idx, uint32(l.index))
	body := append(structBytes(&msg), attr(unix.RTA_GATEWAY, gw[:])...)
	body = append(body, attr(unix.RTA_OIF, idx)...)
	return nlRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, body)
}

// hasIPv4 reports whether the interface already has an IPv4 address (set by
// LXC, or by Proxmox's host-managed DHCP).
func (l *link) hasIPv4() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(l.name)
	if err != nil {
		return false
	}
	return unix.IoctlIfreq(fd, unix.SIOCGIFADDR, ifr) == nil
}
