// Package config fills a daemon's flags from, in order of precedence, the
// command line, environment variables and a config file, so every setting
// has all three spellings: the flag --database-url, the variable
// BLOCKVAULT_DATABASE_URL, and the file key database-url.
//
// The file holds one "key: value" per line (flat YAML); '#' starts a comment.
package config

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// EnvPrefix starts every environment variable.
const EnvPrefix = "BLOCKVAULT_"

// EnvName is the environment variable of a flag: database-url -> BLOCKVAULT_DATABASE_URL.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs, then sets every flag not given on the command
// line from its environment variable, else from the file named by the flag
// "config" (if fs has one and it is set). Unknown keys in the file are an
// error, so a misspelt setting does not pass silently.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	fileValues := map[string]string{}
	if cf := fs.Lookup("config"); cf != nil {
		path := cf.Value.String()
		if !set["config"] {
			if v, ok := os.LookupEnv(EnvName("config")); ok {
				path = v
			}
		}
		if path != "" {
			var err error
			if fileValues, err = readFile(path); err != nil {
				return err
			}
			for k := range fileValues {
				if fs.Lookup(k) == nil || k == "config" {
					return fmt.Errorf("config file %s: unknown setting %q", path, k)
				}
			}
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" {
			return
		}
		src, v, ok := "environment variable "+EnvName(f.Name), "", false
		v, ok = os.LookupEnv(EnvName(f.Name))
		if !ok {
			src = "config file key " + f.Name
			v, ok = fileValues[f.Name]
		}
		if ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", src, err))
			}
		}
	})
	return errors.Join(errs...)
}

func readFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("config file %s line %d: want \"key: value\"", path, n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		out[strings.TrimSpace(k)] = v
	}
	return out, sc.Err()
}
