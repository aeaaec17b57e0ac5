package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// rootWithDocs is the command tree with the docs command, whether or not
// root.go registers it.
func rootWithDocs() *cobra.Command {
	root := newRootCommand()
	for _, c := range root.Commands() {
		if c.Name() == "docs" {
			return root
		}
	}
	root.AddCommand((&app{}).docsCommand())
	return root
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

func genDocs(t *testing.T, root *cobra.Command, date time.Time) (man, compl map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	o := docsOptions{ManDir: filepath.Join(dir, "man"), CompletionDir: filepath.Join(dir, "completions"), Date: date}
	if err := writeDocs(root, o); err != nil {
		t.Fatal(err)
	}
	return readDir(t, o.ManDir), readDir(t, o.CompletionDir)
}

func TestWriteDocs(t *testing.T) {
	// Host-dependent defaults must not reach the pages: a cache directory
	// from the environment is one.
	t.Setenv("PVE_IMAGE_CACHE_DIR", "/sentinel/cache-dir")
	date := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	man, compl := genDocs(t, rootWithDocs(), date)

	var names []string
	for n := range man {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, want := range []string{"pve-image.1", "pve-image-convert.1", "pve-image-inspect.1", "pve-image-pull.1",
		"pve-image-cri.1", "pve-image-cache.1", "pve-image-completion-bash.1"} {
		if man[want] == nil {
			t.Errorf("no %s among %v", want, names)
		}
	}
	for _, n := range names {
		if strings.Contains(n, "docs") || strings.Contains(n, "__complete") || strings.Contains(n, "-help") {
			t.Errorf("hidden or help command has a page: %s", n)
		}
		page := string(man[n])
		if !strings.HasPrefix(page, ".nh\n.TH ") && !strings.Contains(page, "\n.TH ") {
			t.Errorf("%s: no .TH header:\n%.300s", n, page)
		}
		for _, bad := range []string{"Auto generated", "/sentinel/cache-dir"} {
			if strings.Contains(page, bad) {
				t.Errorf("%s contains %q", n, bad)
			}
		}
	}
	root := string(man["pve-image.1"])
	for _, want := range []string{`"Mar 2026"`, `"pve-image ` + version + `"`, "convert", "the host's", "/var/lib/pve-image as root"} {
		if !strings.Contains(root, want) {
			t.Errorf("pve-image.1 lacks %q:\n%s", want, root)
		}
	}

	for _, n := range []string{"pve-image.bash", "pve-image.zsh", "pve-image.fish"} {
		b := compl[n]
		if len(b) == 0 || !bytes.Contains(b, []byte("pve-image")) {
			t.Errorf("completion %s: %d bytes", n, len(b))
		}
	}
	if !bytes.Contains(compl["pve-image.zsh"], []byte("#compdef pve-image")) {
		t.Errorf("zsh completion lacks #compdef")
	}

	// The same tree and date give the same bytes, whoever runs it.
	t.Setenv("PVE_IMAGE_CACHE_DIR", "/other")
	man2, compl2 := genDocs(t, rootWithDocs(), date)
	for n, b := range man {
		if !bytes.Equal(b, man2[n]) {
			t.Errorf("%s differs between runs", n)
		}
	}
	for n, b := range compl {
		if !bytes.Equal(b, compl2[n]) {
			t.Errorf("%s differs between runs", n)
		}
	}
	if len(man2) != len(man) || len(compl2) != len(compl) {
		t.Errorf("runs wrote %d+%d and %d+%d files", len(man), len(compl), len(man2), len(compl2))
	}
}

func TestDocsCommand(t *testing.T) {
	root := rootWithDocs()
	dir := t.TempDir()
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000") // Nov 2023
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"docs", "--man", filepath.Join(dir, "man"), "--completions", filepath.Join(dir, "c")})
	if err := root.Execute(); err != nil {
		t.Fatalf("docs: %v\n%s", err, out.String())
	}
	page, err := os.ReadFile(filepath.Join(dir, "man", "pve-image-convert.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(page, []byte(`"Nov 2023"`)) {
		t.Errorf("SOURCE_DATE_EPOCH not used:\n%.300s", page)
	}
	if _, err := os.Stat(filepath.Join(dir, "c", "pve-image.fish")); err != nil {
		t.Error(err)
	}

	// Hidden from help and completion.
	root = rootWithDocs()
	out.Reset()
	root.SetOut(&out)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "docs") {
		t.Errorf("help lists docs:\n%s", out.String())
	}

	root = rootWithDocs()
	out.Reset()
	root.SetOut(&out)
	root.SetArgs([]string{"__complete", ""})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "convert") || strings.Contains(out.String(), "docs") {
		t.Errorf("completion of commands:\n%s", out.String())
	}

	root = rootWithDocs()
	root.SetArgs([]string{"docs"})
	root.SetOut(&out)
	root.SetErr(&out)
	if err := root.Execute(); err == nil {
		t.Error("docs without --man or --completions succeeded")
	}
}

func TestMarkdownText(t *testing.T) {
	in := "Named <name>_<tag>_<arch>.tar.zst, see *this* [x] `y` # z.\nNext line:\n  REF      a registry image\n\tTAB      tabbed\nAfter."
	want := "Named \\<name\\>\\_\\<tag\\>\\_\\<arch\\>.tar.zst, see \\*this\\* \\[x\\] \\`y\\` \\# z.\nNext line:\n\n      REF      a registry image\n            TAB      tabbed\n\nAfter."
	if got := markdownText(in); got != want {
		t.Errorf("markdownText:\n%s\nwant\n%s", got, want)
	}
	if got := markdownText(""); got != "" {
		t.Errorf("markdownText(\"\") = %q", got)
	}
}
