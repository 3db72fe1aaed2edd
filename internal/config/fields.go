package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Field describes one leaf setting of Config, read from its struct tags.
type Field struct {
	Path   string // YAML path, e.g. "http.addr"
	Env    string // environment variable, e.g. "NOPS_HTTP_ADDR"
	Flag   string // command-line flag without dashes, or ""
	Doc    string
	Secret bool
	index  []int
}

// Fields lists every leaf setting of Config in declaration order.
func Fields() []Field {
	var out []Field
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			name := strings.Split(sf.Tag.Get("yaml"), ",")[0]
			path := name
			if prefix != "" {
				path = prefix + "." + name
			}
			idx := append(append([]int(nil), index...), i)
			if sf.Type.Kind() == reflect.Struct && sf.Type != reflect.TypeFor[Duration]() {
				walk(sf.Type, path, idx)
				continue
			}
			out = append(out, Field{
				Path:   path,
				Env:    sf.Tag.Get("env"),
				Flag:   sf.Tag.Get("flag"),
				Doc:    sf.Tag.Get("doc"),
				Secret: sf.Tag.Get("secret") == "true",
				index:  idx,
			})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return out
}

// Get returns the value of f in c, rendered as text.
func (f Field) Get(c *Config) string {
	v := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
	if d, ok := v.Interface().(Duration); ok {
		return d.String()
	}
	return fmt.Sprint(v.Interface())
}

// Value returns the value of f in c as JSON would show it: numbers as numbers, durations and
// everything else as text.
func (f Field) Value(c *Config) any {
	v := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
	switch v.Kind() {
	case reflect.Int, reflect.Int32, reflect.Int64:
		if _, isDuration := v.Interface().(Duration); !isDuration {
			return v.Int()
		}
	}
	return f.Get(c)
}

// Set parses s into f of c.
func (f Field) Set(c *Config, s string) error {
	v := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
	switch v.Interface().(type) {
	case Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%s: want a duration such as 5s or 1m, got %q", f.Path, s)
		}
		v.Set(reflect.ValueOf(Duration(d)))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%s: want true or false, got %q", f.Path, s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%s: want an integer, got %q", f.Path, s)
		}
		v.SetInt(n)
	default:
		return fmt.Errorf("%s: unsupported setting type %s", f.Path, v.Type())
	}
	return nil
}
