package batch

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.yaml.in/yaml/v3"

	"github.com/pve-image/pve-image/registry"
	"github.com/pve-image/pve-image/template"
)

// File is a parsed, validated build file.
type File struct {
	// Path is where it was read from; Dir the directory relative paths in
	// it are resolved against.
	Path, Dir string
	Defaults  Convert
	Images    []Image
	Output    Output
	// TemplateRegistry is where to look for ready templates
	// (template-registry:); Output.Registry serves when it is empty.
	TemplateRegistry string
	// Warnings are what is odd but not wrong (an image named twice).
	Warnings []string
}

// Image is one entry of images:.
type Image struct {
	// Ref is the reference as written, Reference parsed.
	Ref       string
	Reference registry.Reference
	// Platforms are the image's own, or the defaults'.
	Platforms []v1.Platform
	Convert   Convert
	// Line is where the entry starts; Index its position in images.
	Line, Index int
}

// Convert are the conversion options, by convert's flag names; nil is
// unset (the defaults', then convert's).
type Convert struct {
	Platforms     []v1.Platform
	Init          *string
	InitBinary    *string
	Compression   *string
	Level         *int
	SquashHighIDs *bool
	MaxSize       *int64
	MaxEntries    *int64
	Format        *string
}

// merged is c over d: c's settings where it has them.
func (c Convert) merged(d Convert) Convert {
	if c.Platforms == nil {
		c.Platforms = d.Platforms
	}
	pick := func(a, b *string) *string {
		if a != nil {
			return a
		}
		return b
	}
	c.Init = pick(c.Init, d.Init)
	c.InitBinary = pick(c.InitBinary, d.InitBinary)
	c.Compression = pick(c.Compression, d.Compression)
	c.Format = pick(c.Format, d.Format)
	if c.Level == nil {
		c.Level = d.Level
	}
	if c.SquashHighIDs == nil {
		c.SquashHighIDs = d.SquashHighIDs
	}
	if c.MaxSize == nil {
		c.MaxSize = d.MaxSize
	}
	if c.MaxEntries == nil {
		c.MaxEntries = d.MaxEntries
	}
	return c
}

// Output says where templates go.
type Output struct {
	// Dir gets the template files, named as convert names them.
	Dir string
	// Registry is a template registry (REGISTRY/REPO) to publish to;
	// ChunkSize bounds its blobs (0: tmplreg's default).
	Registry  string
	ChunkSize int64
	// Proxmox is the storage to push to, if any.
	Proxmox *ProxmoxOutput
}

// ProxmoxOutput is output.proxmox.
type ProxmoxOutput struct {
	Storage  string
	Nodes    []string
	AllNodes bool
	Line     int
}

// FileError is a fault in a build or lock file: where and what.
type FileError struct {
	File string
	Line int
	// Key is the key's path, as images[2].platforms[1].
	Key string
	Msg string
}

func (e *FileError) Error() string {
	s := e.File
	if e.Line > 0 {
		s += ":" + strconv.Itoa(e.Line)
	}
	if e.Key != "" {
		s += ": " + e.Key
	}
	return s + ": " + e.Msg
}

// InvalidError is a build file (or its lock) that cannot be used: every
// fault found, in file order. Nothing has been done when it is returned.
type InvalidError struct{ Errs []*FileError }

func (e *InvalidError) Error() string {
	lines := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Keys of the file. Conversion options are convert's flag names.
var (
	topKeys     = []string{"defaults", "images", "output", "template-registry"}
	convertKeys = []string{"platforms", "init", "init-binary", "compression", "compression-level", "level", "squash-high-ids", "max-size", "max-entries", "format"}
	imageKeys   = append([]string{"ref"}, convertKeys...)
	outputKeys  = []string{"dir", "registry", "chunk-size", "proxmox"}
	proxmoxKeys = []string{"storage", "nodes", "all-nodes"}
)

// Load reads and validates a build file. insecure lists the registries
// reached over plain HTTP, which references are parsed with.
func Load(path string, insecure []string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("build file: %w", err)
	}
	return Parse(path, b, insecure)
}

// Parse validates a build file's content; path names it in errors. Every
// fault is reported (an *InvalidError), not just the first.
func Parse(path string, data []byte, insecure []string) (*File, error) {
	p := &parser{file: path, insecure: insecure}
	f := &File{Path: path, Dir: filepath.Dir(path)}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		p.errs = append(p.errs, yamlError(path, err))
		return nil, p.invalid()
	}
	if len(root.Content) == 0 {
		p.errs = append(p.errs, &FileError{File: path, Line: 1, Msg: "the build file is empty; it needs images: with at least one ref"})
		return nil, p.invalid()
	}
	doc := root.Content[0]
	var imagesNode *yaml.Node
	p.mapping(doc, "", topKeys, func(k string, kn, vn *yaml.Node) {
		switch k {
		case "defaults":
			f.Defaults = p.convert(vn, "defaults", convertKeys)
		case "images":
			imagesNode = vn
		case "output":
			f.Output = p.output(vn)
		case "template-registry":
			f.TemplateRegistry = p.str(vn, k)
		}
	})
	if doc.Kind == yaml.MappingNode && imagesNode == nil {
		p.errorf(doc, "images", "missing: the build file lists no images")
	}
	if imagesNode != nil {
		f.Images = p.images(imagesNode, f)
	}
	if f.Defaults.Platforms == nil {
		f.Defaults.Platforms = []v1.Platform{registry.HostPlatform()}
	}
	for i := range f.Images {
		im := &f.Images[i]
		im.Convert = im.Convert.merged(f.Defaults)
		im.Platforms = im.Convert.Platforms
		p.checkConvert(im)
	}
	p.duplicates(f)
	if len(p.errs) > 0 {
		return nil, p.invalid()
	}
	return f, nil
}

// yamlError places a YAML syntax error on its line.
func yamlError(path string, err error) *FileError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := regexp.MustCompile(`^line (\d+): (.*)$`).FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &FileError{File: path, Line: n, Msg: m[2]}
	}
	return &FileError{File: path, Msg: msg}
}

type parser struct {
	file     string
	insecure []string
	errs     []*FileError
}

func (p *parser) invalid() error {
	slices.SortStableFunc(p.errs, func(a, b *FileError) int { return a.Line - b.Line })
	return &InvalidError{Errs: p.errs}
}

func (p *parser) errorf(n *yaml.Node, key, format string, args ...any) {
	p.errs = append(p.errs, &FileError{File: p.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping walks a mapping node's keys, refusing unknown and repeated ones.
func (p *parser) mapping(n *yaml.Node, path string, known []string, fn func(k string, kn, vn *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "want a mapping of %s, not %s", strings.Join(known, ", "), kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		k := kn.Value
		key := join(path, k)
		if line, dup := seen[k]; dup {
			p.errorf(kn, key, "given twice (first on line %d)", line)
			continue
		}
		seen[k] = kn.Line
		if !slices.Contains(known, k) {
			msg := fmt.Sprintf("unknown key %q", k)
			if best := Closest(k, known); best != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", best)
			}
			p.errorf(kn, key, "%s; known keys here: %s", msg, strings.Join(known, ", "))
			continue
		}
		fn(k, kn, vn)
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func (p *parser) str(n *yaml.Node, key string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" || n.Value == "" {
		p.errorf(n, key, "want a string, not %s", kindName(n))
		return ""
	}
	return n.Value
}

func (p *parser) strp(n *yaml.Node, key string) *string {
	s := p.str(n, key)
	return &s
}

func (p *parser) boolean(n *yaml.Node, key string) *bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		p.errorf(n, key, "want true or false, not %s", kindName(n))
	}
	return &b
}

func (p *parser) integer(n *yaml.Node, key string, lo, hi int64) *int64 {
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil {
		p.errorf(n, key, "want a whole number, not %s", kindName(n))
		return &v
	}
	if v < lo || v > hi {
		p.errorf(n, key, "%d is out of range (%d to %d)", v, lo, hi)
	}
	return &v
}

func (p *parser) strings(n *yaml.Node, key string) []string {
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, key, "want a list, not %s", kindName(n))
		return nil
	}
	out := []string{}
	for i, c := range n.Content {
		out = append(out, p.str(c, fmt.Sprintf("%s[%d]", key, i)))
	}
	return out
}

// size reads a byte count: a number, or one with a K, M, G or T suffix
// (powers of 1024), as --max-size takes it.
func (p *parser) size(n *yaml.Node, key string) *int64 {
	v, err := ParseSize(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		p.errorf(n, key, "want a size such as 64G or 512M, not %s", kindName(n))
	}
	return &v
}

// ParseSize reads a byte count with an optional K, M, G or T suffix
// (powers of 1024; KiB, KB and K are the same).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := 1.0
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult = math.Pow(1024, float64(i+1))
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || !(v >= 0) || math.IsInf(v*mult, 0) || v*mult > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G or T suffix", s)
	}
	return int64(v * mult), nil
}

// platforms reads a list of os/arch[/variant], each checked.
func (p *parser) platforms(n *yaml.Node, key string) []v1.Platform {
	ss := p.strings(n, key)
	if n.Kind == yaml.SequenceNode && len(ss) == 0 {
		p.errorf(n, key, "an empty list: give at least one platform, such as linux/amd64")
	}
	out := []v1.Platform{}
	seen := map[string]bool{}
	for i, s := range ss {
		if s == "" {
			continue
		}
		k := fmt.Sprintf("%s[%d]", key, i)
		pl, err := checkPlatform(s)
		if err != nil {
			p.errorf(n.Content[i], k, "%v", err)
			continue
		}
		if ps := registry.PlatformString(pl); seen[ps] {
			p.errorf(n.Content[i], k, "%s is listed twice", ps)
			continue
		}
		seen[registry.PlatformString(pl)] = true
		out = append(out, pl)
	}
	return out
}

// architectures are the OCI architectures images are built for, with the
// variants each has.
var architectures = map[string][]string{
	"amd64": {"v1", "v2", "v3", "v4"}, "arm64": {"v8", "v9"}, "arm": {"v5", "v6", "v7", "v8"}, "386": nil,
	"riscv64": nil, "ppc64le": nil, "s390x": nil, "mips64le": nil, "mips64": nil, "loong64": nil,
}

// checkPlatform parses os/arch[/variant] and refuses what no image is
// built for: templates are Linux root file systems.
func checkPlatform(s string) (v1.Platform, error) {
	pl, err := registry.ParsePlatform(s)
	if err != nil {
		return pl, err
	}
	vs, ok := architectures[pl.Architecture]
	switch {
	case pl.OS != "linux":
		return pl, fmt.Errorf("platform %q: templates are Linux root file systems; want linux/ARCH", s)
	case !ok:
		known := slices.Sorted(maps.Keys(architectures))
		return pl, fmt.Errorf("platform %q: unknown architecture %q (known: %s)", s, pl.Architecture, strings.Join(known, ", "))
	case pl.Variant != "" && !slices.Contains(vs, pl.Variant):
		return pl, fmt.Errorf("platform %q: %s has no variant %q", s, pl.Architecture, pl.Variant)
	}
	return pl, nil
}

// convert reads conversion options.
func (p *parser) convert(n *yaml.Node, path string, known []string) Convert {
	var c Convert
	p.mapping(n, path, known, func(k string, kn, vn *yaml.Node) { p.convertKey(&c, path, k, kn, vn) })
	return c
}

func (p *parser) convertKey(c *Convert, path, k string, kn, vn *yaml.Node) {
	key := join(path, k)
	switch k {
	case "platforms":
		c.Platforms = p.platforms(vn, key)
	case "init":
		c.Init = p.strp(vn, key)
		if _, err := template.ParseInitMode(*c.Init); err != nil && *c.Init != "" {
			p.errorf(vn, key, "%q: want auto, shim or none", *c.Init)
		}
	case "init-binary":
		c.InitBinary = p.strp(vn, key)
	case "compression":
		c.Compression = p.strp(vn, key)
		if _, ok := compressions[*c.Compression]; !ok && *c.Compression != "" {
			p.errorf(vn, key, "%q: want zst, gz, xz or none (Proxmox has no bzip2 encoder pve-image could use)", *c.Compression)
		}
	case "compression-level", "level":
		if c.Level != nil {
			p.errorf(kn, key, "compression-level and level are the same option; give one")
		}
		v := int(*p.integer(vn, key, 1, 22))
		c.Level = &v
	case "squash-high-ids":
		c.SquashHighIDs = p.boolean(vn, key)
	case "max-size":
		c.MaxSize = p.size(vn, key)
	case "max-entries":
		c.MaxEntries = p.integer(vn, key, 1, math.MaxInt64)
	case "format":
		c.Format = p.strp(vn, key)
		if *c.Format != "template" && *c.Format != "oci-archive" && *c.Format != "" {
			p.errorf(vn, key, "%q: want template or oci-archive", *c.Format)
		}
	}
}

// compressions are compression: values.
var compressions = map[string]template.Compression{
	"zst": template.Zstd, "zstd": template.Zstd, "gz": template.Gzip, "gzip": template.Gzip,
	"xz": template.XZ, "none": template.None, "tar": template.None,
}

func (p *parser) images(n *yaml.Node, f *File) []Image {
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "images", "want a list of images (- ref: REGISTRY/REPO:TAG), not %s", kindName(n))
		return nil
	}
	if len(n.Content) == 0 {
		p.errorf(n, "images", "an empty list: nothing to build")
	}
	var out []Image
	for i, c := range n.Content {
		path := fmt.Sprintf("images[%d]", i)
		im := Image{Line: c.Line, Index: i}
		// A bare string is a ref alone, as people write lists.
		if c.Kind == yaml.ScalarNode && c.Tag == "!!str" {
			im.Ref = c.Value
		} else {
			p.mapping(c, path, imageKeys, func(k string, kn, vn *yaml.Node) {
				if k == "ref" {
					im.Ref = p.str(vn, join(path, k))
					return
				}
				p.convertKey(&im.Convert, path, k, kn, vn)
			})
			if c.Kind == yaml.MappingNode && im.Ref == "" && !p.hasKey(c, "ref") {
				p.errorf(c, join(path, "ref"), "missing: every image needs a ref")
			}
		}
		if im.Ref != "" {
			ref, err := registry.ParseReference(im.Ref, p.insecure)
			if err != nil {
				p.errorf(c, join(path, "ref"), "%v", err)
			}
			if ref.Transport != registry.Docker && ref.Path != "" && !filepath.IsAbs(ref.Path) {
				// Local sources are relative to the build file.
				ref.Path = filepath.Join(f.Dir, ref.Path)
			}
			im.Reference = ref
		}
		out = append(out, im)
	}
	return out
}

func (p *parser) hasKey(n *yaml.Node, k string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == k {
			return true
		}
	}
	return false
}

func (p *parser) output(n *yaml.Node) Output {
	var o Output
	p.mapping(n, "output", outputKeys, func(k string, kn, vn *yaml.Node) {
		key := join("output", k)
		switch k {
		case "dir":
			o.Dir = p.str(vn, key)
		case "registry":
			o.Registry = p.str(vn, key)
			if o.Registry != "" {
				if err := checkRegistry(o.Registry, p.insecure); err != nil {
					p.errorf(vn, key, "%v", err)
				}
			}
		case "chunk-size":
			o.ChunkSize = *p.size(vn, key)
			if o.ChunkSize < 1<<20 && o.ChunkSize > 0 && vn.Kind == yaml.ScalarNode {
				p.errorf(vn, key, "%s is too small (at least 1M)", vn.Value)
			}
		case "proxmox":
			o.Proxmox = &ProxmoxOutput{Line: vn.Line}
			p.mapping(vn, key, proxmoxKeys, func(k string, kn, vn *yaml.Node) {
				switch k {
				case "storage":
					o.Proxmox.Storage = p.str(vn, join(key, k))
				case "nodes":
					o.Proxmox.Nodes = p.strings(vn, join(key, k))
				case "all-nodes":
					o.Proxmox.AllNodes = *p.boolean(vn, join(key, k))
				}
			})
			switch px := o.Proxmox; {
			case px.AllNodes && len(px.Nodes) > 0:
				p.errorf(vn, key, "nodes and all-nodes: give one")
			case !px.AllNodes && len(px.Nodes) == 0 && vn.Kind == yaml.MappingNode:
				p.errorf(vn, key, "no nodes: give nodes: [NODE, ...] or all-nodes: true")
			}
		}
	})
	return o
}

// checkRegistry refuses what cannot name a template registry's repository.
func checkRegistry(s string, insecure []string) error {
	if strings.Contains(s, "://") || strings.Contains(s, "@") {
		return fmt.Errorf("%q: want REGISTRY/REPO (no scheme, no digest)", s)
	}
	ref, err := registry.ParseReference(s, insecure)
	if err != nil {
		return err
	}
	if ref.Transport != registry.Docker {
		return fmt.Errorf("%q: want REGISTRY/REPO", s)
	}
	if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
		return fmt.Errorf("%q: name the repository without a tag (templates are tagged by their key)", s)
	}
	return nil
}

// checkConvert validates an image's merged options against each other.
func (p *parser) checkConvert(im *Image) {
	c := im.Convert
	key := fmt.Sprintf("images[%d]", im.Index)
	at := &yaml.Node{Line: im.Line}
	comp := template.Zstd
	if c.Compression != nil {
		comp = compressions[*c.Compression]
	}
	if c.Format != nil && *c.Format == "oci-archive" {
		if c.Compression != nil && comp != template.None {
			p.errorf(at, key, "format oci-archive is an uncompressed .tar; it takes no compression %q", *c.Compression)
		}
		comp = template.None
	}
	if c.Level != nil {
		if err := comp.CheckLevel(*c.Level); err != nil {
			p.errorf(at, join(key, "compression-level"), "%v", err)
		}
	}
}

// duplicates warns about images named twice with the same options: they
// are built once.
func (p *parser) duplicates(f *File) {
	first := map[string]int{}
	for i, im := range f.Images {
		if im.Ref == "" {
			continue
		}
		var ps []string
		for _, pl := range im.Platforms {
			ps = append(ps, registry.PlatformString(pl))
		}
		k := im.key() + "\x00" + im.Convert.fingerprint() + "\x00" + strings.Join(ps, ",")
		if j, ok := first[k]; ok {
			f.Warnings = append(f.Warnings, fmt.Sprintf("%s:%d: images[%d]: %s is the same image as images[%d] (line %d); it is built once",
				f.Path, im.Line, i, im.Ref, j, f.Images[j].Line))
			continue
		}
		first[k] = i
	}
}

// fingerprint is what tells two option sets apart (platforms aside).
func (c Convert) fingerprint() string {
	s := func(p *string) string {
		if p == nil {
			return "-"
		}
		return *p
	}
	n := func(v any) string {
		switch x := v.(type) {
		case *int:
			if x != nil {
				return strconv.Itoa(*x)
			}
		case *int64:
			if x != nil {
				return strconv.FormatInt(*x, 10)
			}
		case *bool:
			if x != nil {
				return strconv.FormatBool(*x)
			}
		}
		return "-"
	}
	return strings.Join([]string{s(c.Init), s(c.InitBinary), s(c.Compression), n(c.Level), n(c.SquashHighIDs), n(c.MaxSize), n(c.MaxEntries), s(c.Format)}, "|")
}

// Closest is the key within two edits of s, if one is: the "did you mean"
// of a misspelt key, for the build file and pve-image's other YAML files.
func Closest(s string, keys []string) string {
	best, bestD := "", 3
	for _, k := range keys {
		if d := editDistance(strings.ToLower(s), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// IsInvalid says whether err is a build or lock file that cannot be used.
func IsInvalid(err error) bool {
	var ie *InvalidError
	return errors.As(err, &ie)
}
