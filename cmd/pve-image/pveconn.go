package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/pve-image/pve-image/batch"
	"github.com/pve-image/pve-image/proxmox"
)

// pveFlags are the connection flags of the commands that talk to Proxmox.
// Each setting comes from its flag, else its environment variable, else the
// chosen context of the config file.
type pveFlags struct {
	url, token, user, password, fingerprint string
	insecure                                bool
	context, configPath                     string
	node, storage                           string
}

// nodeAutoUsage is --node's help where auto placement applies (run, cri).
const nodeAutoUsage = "Proxmox node, or auto: the online node with the most free memory and CPU that has the storages needed (env PVE_NODE; or the context's node)"

func (f *pveFlags) register(cmd *cobra.Command, storage bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.url, "pve-url", "", "Proxmox API URL, https://HOST:8006 (env PVE_URL)")
	fl.StringVar(&f.token, "pve-token", "", "API token USER@REALM!TOKENID=SECRET (env PVE_TOKEN)")
	fl.StringVar(&f.user, "pve-user", "", "user for ticket authentication, USER@REALM (env PVE_USER)")
	fl.StringVar(&f.password, "pve-password", "", "password for --pve-user (env PVE_PASSWORD)")
	fl.StringVar(&f.fingerprint, "pve-fingerprint", "", "pin the server certificate: its SHA-256, AB:CD:... or hex (env PVE_FINGERPRINT)")
	fl.BoolVar(&f.insecure, "pve-insecure", false, "accept any server certificate (env PVE_INSECURE=1); prefer --pve-fingerprint")
	fl.StringVar(&f.context, "pve-context", "", "context of the config file to use (env PVE_CONTEXT; default its current-context)")
	fl.StringVar(&f.configPath, "pve-config", "", "config file (env PVE_IMAGE_CONFIG; default $XDG_CONFIG_HOME/pve-image/config.yaml)")
	fl.StringVarP(&f.node, "node", "n", "", "Proxmox node (env PVE_NODE; or the context's node)")
	if storage {
		fl.StringVarP(&f.storage, "storage", "s", "", "template storage (env PVE_STORAGE; or the context's storage; default local)")
	}
}

// pveContext is one entry of the config file, like a kubeconfig context.
type pveContext struct {
	Name        string `yaml:"name"`
	URL         string `yaml:"url"`
	Token       string `yaml:"token"`
	User        string `yaml:"user"`
	Password    string `yaml:"password"`
	Fingerprint string `yaml:"fingerprint"`
	Insecure    bool   `yaml:"insecure"`
	Node        string `yaml:"node"`
	Storage     string `yaml:"storage"`
}

type pveConfigFile struct {
	CurrentContext string       `yaml:"current-context"`
	Contexts       []pveContext `yaml:"contexts"`
}

func defaultConfigPath() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "pve-image", "config.yaml")
}

// resolve merges flag, environment and config file.
func (f *pveFlags) resolve() (pveContext, error) {
	pick := func(flag, env string) string {
		if flag != "" {
			return flag
		}
		return os.Getenv(env)
	}
	path := pick(f.configPath, "PVE_IMAGE_CONFIG")
	explicitPath := path != ""
	if path == "" {
		path = defaultConfigPath()
	}
	var file pveContext
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var cf pveConfigFile
		if err := decodeYAMLStrict(path, b, &cf); err != nil {
			return pveContext{}, err
		}
		name := pick(f.context, "PVE_CONTEXT")
		if name == "" {
			name = cf.CurrentContext
		}
		found := name == "" && len(cf.Contexts) == 0
		for _, c := range cf.Contexts {
			if c.Name == name || (name == "" && len(cf.Contexts) == 1) {
				file, found = c, true
			}
		}
		if !found && name != "" {
			return pveContext{}, fmt.Errorf("config %s has no context %q", path, name)
		}
	case errors.Is(err, os.ErrNotExist) && !explicitPath:
		if name := pick(f.context, "PVE_CONTEXT"); name != "" {
			return pveContext{}, fmt.Errorf("context %q: no config file at %s", name, path)
		}
	default:
		return pveContext{}, fmt.Errorf("config: %w", err)
	}
	or := func(flag, env, fromFile string) string {
		if v := pick(flag, env); v != "" {
			return v
		}
		return fromFile
	}
	c := pveContext{
		Name:        file.Name,
		URL:         or(f.url, "PVE_URL", file.URL),
		Token:       or(f.token, "PVE_TOKEN", file.Token),
		User:        or(f.user, "PVE_USER", file.User),
		Password:    or(f.password, "PVE_PASSWORD", file.Password),
		Fingerprint: or(f.fingerprint, "PVE_FINGERPRINT", file.Fingerprint),
		Node:        or(f.node, "PVE_NODE", file.Node),
		Storage:     or(f.storage, "PVE_STORAGE", file.Storage),
		Insecure:    f.insecure || file.Insecure,
	}
	if v := os.Getenv("PVE_INSECURE"); v != "" && !f.insecure {
		b, _ := strconv.ParseBool(v)
		c.Insecure = b || c.Insecure
	}
	// A token given closer to the command beats a user from the file,
	// and the other way round.
	if (f.token != "" || os.Getenv("PVE_TOKEN") != "") && f.user == "" && os.Getenv("PVE_USER") == "" {
		c.User, c.Password = "", ""
	} else if (f.user != "" || os.Getenv("PVE_USER") != "") && f.token == "" && os.Getenv("PVE_TOKEN") == "" {
		c.Token = ""
	}
	if c.Storage == "" {
		c.Storage = "local"
	}
	return c, nil
}

// decodeYAMLStrict decodes a config file into v and refuses keys v has no
// field for: a misspelt key would otherwise be dropped without a word and
// its setting silently left at the default.
func decodeYAMLStrict(path string, b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) { // EOF: an empty file
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = unknownKeyMessage(m, reflect.TypeOf(v))
	}
	return fmt.Errorf("config %s: %s", path, strings.Join(msgs, "; "))
}

// yamlUnknownField is yaml.v3's message for a key KnownFields refuses.
var yamlUnknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type (\S+)$`)

// unknownKeyMessage turns yaml.v3's "field x not found in type main.T"
// into the key, the keys that are allowed there, and the likely one meant.
func unknownKeyMessage(msg string, root reflect.Type) string {
	m := yamlUnknownField.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	known := yamlKeys(root, m[3], map[reflect.Type]bool{})
	out := fmt.Sprintf("line %s: unknown key %q", m[1], m[2])
	if best := batch.Closest(m[2], known); best != "" {
		out += fmt.Sprintf(" (did you mean %q?)", best)
	}
	if len(known) > 0 {
		out += "; known keys here: " + strings.Join(known, ", ")
	}
	return out
}

// yamlKeys finds the struct type named name (as reflect prints it) within
// t and lists its YAML keys.
func yamlKeys(t reflect.Type, name string, seen map[reflect.Type]bool) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return nil
	}
	seen[t] = true
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "-" || !f.IsExported() {
			continue
		}
		if key == "" {
			key = strings.ToLower(f.Name)
		}
		keys = append(keys, key)
		if k := yamlKeys(f.Type, name, seen); k != nil {
			return k
		}
	}
	if t.String() == name {
		return keys
	}
	return nil
}

// dial connects to Proxmox with the resolved settings.
func (a *app) dial(ctx context.Context, f *pveFlags) (*proxmox.Client, pveContext, error) {
	c, err := f.resolve()
	if err != nil {
		return nil, c, err
	}
	if c.Insecure && c.Fingerprint == "" {
		fmt.Fprintln(a.stderr, "WARNING: --pve-insecure: the Proxmox server's certificate is not checked; anyone between you and it can read your credentials. Pin it with --pve-fingerprint instead.")
	}
	cl, err := proxmox.Dial(ctx, proxmox.Config{URL: c.URL, Token: c.Token, User: c.User, Password: c.Password,
		Fingerprint: c.Fingerprint, Insecure: c.Insecure, UserAgent: "pve-image/" + version})
	if err != nil {
		return nil, c, err
	}
	a.log.Debug("connected to Proxmox", "url", c.URL, "version", cl.Version().Version, "native", cl.Version().Native())
	return cl, c, nil
}

// dialNode connects and makes sure a node is named.
func (a *app) dialNode(ctx context.Context, f *pveFlags) (*proxmox.Client, pveContext, error) {
	cl, pc, err := a.dial(ctx, f)
	if err == nil {
		err = needNode(pc)
	}
	return cl, pc, err
}

func needNode(c pveContext) error {
	if c.Node == "" {
		return errors.New("no node: give --node (or PVE_NODE, or node: in the config context)")
	}
	return nil
}
