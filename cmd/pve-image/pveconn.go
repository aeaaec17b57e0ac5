package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

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
		if err := yaml.Unmarshal(b, &cf); err != nil {
			return pveContext{}, fmt.Errorf("config %s: %w", path, err)
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
