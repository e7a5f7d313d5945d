package config

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte("# settings\nlisten: \"127.0.0.1:1\"\ndata-dir: /from/file\nworkers: 3\n"), 0o600)
	t.Setenv("BLOCKVAULT_DATA_DIR", "/from/env")

	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("config", "", "")
	listen := fs.String("listen", "default", "")
	data := fs.String("data-dir", "default", "")
	workers := fs.Int("workers", 1, "")
	name := fs.String("name", "default", "")
	if err := Parse(fs, []string{"--config", file, "--name", "flag"}); err != nil {
		t.Fatal(err)
	}
	if *listen != "127.0.0.1:1" || *data != "/from/env" || *workers != 3 || *name != "flag" {
		t.Fatalf("got listen=%q data=%q workers=%d name=%q", *listen, *data, *workers, *name)
	}
}

func TestUnknownKeyAndBadValue(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte("lisen: x\n"), 0o600)
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("config", file, "")
	fs.String("listen", "", "")
	if err := Parse(fs, nil); err == nil {
		t.Fatal("misspelt key accepted")
	}
	t.Setenv("BLOCKVAULT_WORKERS", "many")
	fs = flag.NewFlagSet("y", flag.ContinueOnError)
	fs.Int("workers", 1, "")
	if err := Parse(fs, nil); err == nil {
		t.Fatal("bad value accepted")
	}
}
