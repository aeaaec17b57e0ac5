// Command benchimage builds the benchmark's images and pushes them to a
// registry:
//
//	debian      a debootstrap'd Debian rootfs split into 4 layers, the third
//	            deleting documentation and caches (whiteouts, an opaque
//	            directory), the fourth adding files
//	smallfiles  100,000 small files in two layers
//	big         debian plus two layers of generated data, about 1 GiB in all
//
//	benchimage -rootfs DIR -registry HOST:PORT [-only NAME]
//
// With -floor it measures instead what converting an image costs at least
// on this machine (see floor):
//
//	benchimage -floor TEMPLATE.tar.zst LAYER-BLOB...
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	rootfs := flag.String("rootfs", "", "debootstrap'd Debian root filesystem")
	reg := flag.String("registry", "", "registry host:port to push to")
	only := flag.String("only", "", "build only this image")
	fl := flag.Bool("floor", false, "measure the floor of converting: TEMPLATE LAYER-BLOB...")
	flag.Parse()
	if *fl {
		if flag.NArg() < 2 {
			log.Fatal("-floor needs the template and the layer blobs")
		}
		floor(flag.Arg(0), flag.Args()[1:])
		return
	}
	if *reg == "" || *rootfs == "" {
		log.Fatal("need -rootfs and -registry")
	}
	deb := debianLayers(*rootfs)
	images := map[string][]v1.Layer{
		"debian":     deb,
		"smallfiles": smallFiles(),
		"big":        append(append([]v1.Layer{}, deb...), dataLayer(1, 420<<20), dataLayer(2, 420<<20)),
	}
	for n, layers := range images {
		if *only != "" && n != *only {
			continue
		}
		img, err := mutate.AppendLayers(empty.Image, layers...)
		check(err)
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", "amd64"
		cf.Config.Cmd = []string{"/bin/bash"}
		img, err = mutate.ConfigFile(img, cf)
		check(err)
		ref, err := name.ParseReference(*reg+"/bench/"+n+":1", name.Insecure)
		check(err)
		check(remote.Write(ref, img))
		var csize, usize int64
		ls, _ := img.Layers()
		for _, l := range ls {
			s, _ := l.Size()
			csize += s
		}
		cfg, _ := img.ConfigFile()
		_ = cfg
		for _, l := range ls {
			rc, _ := l.Uncompressed()
			n, _ := io.Copy(io.Discard, rc)
			rc.Close()
			usize += n
		}
		fmt.Printf("%s\t%s\t%d layers\t%.0f MiB compressed\t%.0f MiB uncompressed\n", n, ref, len(ls), float64(csize)/(1<<20), float64(usize)/(1<<20))
	}
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// layer gzips a tar made by fill, at gzip's default level as docker does.
func layer(fill func(tw *tar.Writer)) v1.Layer {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	tw := tar.NewWriter(zw)
	fill(tw)
	check(tw.Close())
	check(zw.Close())
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	check(err)
	return l
}

var mtime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// addTree adds the files under root for which keep says yes, hardlinks as
// hardlinks.
func addTree(tw *tar.Writer, root string, keep func(rel string) bool) {
	inodes := map[uint64]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		check(err)
		rel, _ := filepath.Rel(root, p)
		if rel == "." || !keep(rel) {
			return nil
		}
		fi, err := os.Lstat(p)
		check(err)
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		h, err := tar.FileInfoHeader(fi, link)
		check(err)
		h.Name, h.Uname, h.Gname, h.Format = rel, "", "", tar.FormatPAX
		if fi.IsDir() {
			h.Name += "/"
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := inodes[st.Ino]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				inodes[st.Ino] = rel
			}
		}
		check(tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			check(err)
			_, err = io.Copy(tw, f)
			check(err)
			f.Close()
		}
		return nil
	})
}

func under(rel string, dirs ...string) bool {
	for _, d := range dirs {
		if rel == d || strings.HasPrefix(rel, d+"/") {
			return true
		}
	}
	return false
}

func debianLayers(root string) []v1.Layer {
	l1 := layer(func(tw *tar.Writer) {
		addTree(tw, root, func(rel string) bool { return !under(rel, "usr/share", "var") || rel == "usr/share" || rel == "var" })
	})
	l2 := layer(func(tw *tar.Writer) {
		addTree(tw, root, func(rel string) bool { return under(rel, "usr/share", "var") && rel != "usr/share" && rel != "var" })
	})
	l3 := layer(func(tw *tar.Writer) {
		for _, p := range []string{"usr/share/doc", "usr/share/man", "usr/share/info", "var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"} {
			dir, base := filepath.Split(p)
			check(tw.WriteHeader(&tar.Header{Name: dir + ".wh." + base, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime}))
		}
		check(tw.WriteHeader(&tar.Header{Name: "usr/share/locale/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}))
		check(tw.WriteHeader(&tar.Header{Name: "usr/share/locale/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime}))
	})
	l4 := layer(func(tw *tar.Writer) {
		body := []byte("Welcome to the pve-image benchmark image.\n")
		check(tw.WriteHeader(&tar.Header{Name: "etc/motd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mtime}))
		tw.Write(body)
	})
	return []v1.Layer{l1, l2, l3, l4}
}

const words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua "

func text(r *rand.Rand, n int) []byte {
	b := make([]byte, 0, n)
	for len(b) < n {
		w := words[r.Intn(len(words)-10):]
		b = append(b, w[:r.Intn(10)+1]...)
		if r.Intn(12) == 0 {
			b = append(b, '\n')
		}
	}
	return b[:n]
}

func smallFiles() []v1.Layer {
	var layers []v1.Layer
	for part := 0; part < 2; part++ {
		r := rand.New(rand.NewSource(int64(part)))
		layers = append(layers, layer(func(tw *tar.Writer) {
			for d := 0; d < 250; d++ {
				dir := fmt.Sprintf("srv/part%d/dir%03d/", part, d)
				check(tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}))
				for f := 0; f < 200; f++ {
					body := text(r, 100+r.Intn(1900))
					check(tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%sfile%03d.txt", dir, f), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mtime}))
					tw.Write(body)
				}
			}
		}))
	}
	return layers
}

// dataLayer is size bytes of files that compress like a typical image: a
// third random bytes (binaries, already-compressed assets), the rest text.
func dataLayer(seed int64, size int) v1.Layer {
	r := rand.New(rand.NewSource(seed))
	return layer(func(tw *tar.Writer) {
		dir := fmt.Sprintf("opt/data%d/", seed)
		check(tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}))
		for i, done := 0, 0; done < size; i++ {
			n := 1<<20 + r.Intn(7<<20)
			var body []byte
			if i%3 == 0 {
				body = make([]byte, n)
				r.Read(body)
			} else {
				body = text(r, n)
			}
			check(tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%sblob%04d", dir, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(n), ModTime: mtime}))
			tw.Write(body)
			done += n
		}
	})
}
