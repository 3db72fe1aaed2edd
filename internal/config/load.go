package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Sources are the inputs of Load, in increasing precedence: a YAML file, the environment, flags.
type Sources struct {
	File  string                          // path of a YAML file; "" for none
	Env   func(key string) (string, bool) // os.LookupEnv in production; nil for none
	Flags map[string]string               // flags set on the command line, by flag name
}

// Load builds a Config from Default() overlaid with the sources, and validates it.
func Load(src Sources) (Config, error) {
	c := Default()
	if src.File != "" {
		if err := loadFile(&c, src.File); err != nil {
			return Config{}, err
		}
	}
	fields := Fields()
	if src.Env != nil {
		for _, f := range fields {
			if f.Env == "" {
				continue
			}
			if s, ok := src.Env(f.Env); ok {
				if err := f.Set(&c, s); err != nil {
					return Config{}, fmt.Errorf("environment %s: %w", f.Env, err)
				}
			}
		}
	}
	for name, s := range src.Flags {
		f, ok := fieldByFlag(fields, name)
		if !ok {
			return Config{}, fmt.Errorf("unknown flag --%s", name)
		}
		if err := f.Set(&c, s); err != nil {
			return Config{}, fmt.Errorf("flag --%s: %w", name, err)
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func fieldByFlag(fields []Field, name string) (Field, bool) {
	for _, f := range fields {
		if f.Flag == name {
			return f, true
		}
	}
	return Field{}, false
}

func loadFile(c *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// Redacted returns a copy of c with every secret field replaced by "[REDACTED]" when set.
func (c Config) Redacted() Config {
	out := c
	for _, f := range Fields() {
		if f.Secret && f.Get(&out) != "" {
			_ = f.Set(&out, "[REDACTED]")
		}
	}
	return out
}

// YAML renders c (redact it first when showing it).
func (c Config) YAML() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return b.Bytes(), nil
}

// MarkdownTable renders the settings table that the README shows.
func MarkdownTable() string {
	var b strings.Builder
	d := Default()
	b.WriteString("| YAML key | environment | flag | default | meaning |\n|---|---|---|---|---|\n")
	for _, f := range Fields() {
		flag := ""
		if f.Flag != "" {
			flag = "`--" + f.Flag + "`"
		}
		def := f.Get(&d)
		if def == "" {
			def = "(empty)"
		} else {
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | %s | %s |\n", f.Path, f.Env, flag, def, strings.ReplaceAll(f.Doc, "|", "\\|"))
	}
	return b.String()
}
