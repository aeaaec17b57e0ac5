package export

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pve-image/pve-image/proxmox"
	"github.com/pve-image/pve-image/template"
)

// TestRecordedLabels: what a container's config says goes into labels
// and comes back the same; MAC addresses and volume IDs stay behind.
func TestRecordedLabels(t *testing.T) {
	cfg := proxmox.ParsePCTConfig(testConf + "features: nesting=1,keyctl=1\ntags: prod;web\n" +
		"mp0: local-lvm:vm-100-disk-1,mp=/data,backup=1,size=8G\nmp2: /srv/host,mp=/host,ro=1\nnet1: name=eth1,bridge=vmbr1,hwaddr=BC:24:11:00:00:02,tag=5\n")
	rec := recordConfig(cfg, &runRecord{DNS: template.DNS{Servers: []string{"10.0.0.1"}, Search: []string{"lab"}}})
	rec.Source = "registry.example/app@sha256:" + strings.Repeat("a", 64)
	rec.Mounts[0].Layer = "sha256:" + strings.Repeat("b", 64)
	labels := rec.Labels()
	for k, v := range labels {
		if !strings.HasPrefix(k, LabelPrefix) {
			t.Errorf("label %s outside the namespace", k)
		}
		if strings.Contains(v, "hwaddr") || strings.Contains(v, "vm-100-disk") {
			t.Errorf("label %s=%s keeps what a restored container gets anew", k, v)
		}
	}
	got, ok, err := ReadRecorded(labels)
	if err != nil || !ok {
		t.Fatalf("ReadRecorded: %v %v", ok, err)
	}
	if !reflect.DeepEqual(got, rec) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, rec)
	}
	want := map[string]string{"memory": "256", "cores": "2", "swap": "128", "hostname": "web", "features": "nesting=1,keyctl=1",
		"tags": "prod;web", "ostype": "debian", "arch": "amd64", "unprivileged": "1", "rootfs.size": "4G"}
	if !reflect.DeepEqual(got.Config, want) {
		t.Errorf("config %v, want %v", got.Config, want)
	}
	if !slices.Equal(got.Nets, []string{"name=eth0,bridge=vmbr0,ip=dhcp,type=veth", "name=eth1,bridge=vmbr1,tag=5"}) {
		t.Errorf("nets %q", got.Nets)
	}
	if got.Mounts[1].Value != "/srv/host,mp=/host,ro=1" || got.Mounts[1].MountPoint().Kind() != "bind" || got.Mounts[0].MountPoint().Path() != "/data" {
		t.Errorf("mounts %+v", got.Mounts)
	}

	if _, ok, _ := ReadRecorded(map[string]string{"org.opencontainers.image.title": "x"}); ok {
		t.Error("an image without the labels reads as exported")
	}
	if _, _, err := ReadRecorded(map[string]string{LabelVersion: "2"}); err == nil {
		t.Error("a newer version's labels were read")
	}
}

// TestProgramOf: what a container runs over its image comes from run's
// record, else from its config's entrypoint and env keys.
func TestProgramOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		conf string
		rec  *runRecord
		want program
	}{
		{name: "run's record", conf: "entrypoint: /sbin/pve-image-init\nlxc.environment.runtime: PVE_IMAGE_NET=host\n",
			rec:  &runRecord{Env: []string{"A=1"}, Entrypoint: []string{"/app", "x y"}},
			want: program{Entrypoint: []string{"/app", "x y"}, Env: []string{"A=1"}}},
		{name: "pve-image-init with an argv", conf: "entrypoint: /sbin/pve-image-init -- /app serve\nlxc.environment.runtime: MODE=a\nlxc.environment.runtime: PVE_IMAGE_NET=host\n",
			want: program{Entrypoint: []string{"/app", "serve"}, Env: []string{"MODE=a"}}},
		{name: "argv in the environment", conf: "entrypoint: /sbin/pve-image-init\nlxc.environment.runtime: PVE_IMAGE_ARGV=[\"/app\",\"a b\"]\n",
			want: program{Entrypoint: []string{"/app", "a b"}}},
		{name: "Proxmox's own OCI import", conf: "entrypoint: /docker-entrypoint.sh nginx\nlxc.environment.runtime: PATH=/bin\nlxc.init.cwd: /srv\nlxc.init.uid: 101\nlxc.init.gid: 102\n",
			want: program{Entrypoint: []string{"/docker-entrypoint.sh", "nginx"}, Env: []string{"PATH=/bin"}, WorkingDir: "/srv", User: "101:102"}},
		{name: "a system container", conf: "ostype: debian\n", want: program{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := programOf(proxmox.ParsePCTConfig(tc.conf), tc.rec)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if r := readRecord("user text\npve-image: {\"image\":\"a:1\",\"digest\":\"sha256:x\",\"env\":[\"K=v\"]}"); r == nil || r.Image != "a:1" || r.Env[0] != "K=v" {
		t.Errorf("readRecord: %+v", r)
	}
}
