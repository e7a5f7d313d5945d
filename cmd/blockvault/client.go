package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	backupv1 "github.com/blockvault/blockvault/gen/blockvault/backup/v1"
	volumev1 "github.com/blockvault/blockvault/gen/blockvault/volume/v1"
	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/blockvault/blockvault/pkg/mtls"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// tlsFiles are the CLI's mutual TLS files (from BLOCKVAULT_TLS_CERT,
// BLOCKVAULT_TLS_KEY, BLOCKVAULT_TLS_CA or the --tls-* flags).
var tlsFiles mtls.Files

// dial connects to a daemon, sending the token (if any) with every call.
func dial(addr, token string) (*grpc.ClientConn, error) {
	unary, stream := auth.ClientInterceptors(token)
	creds, err := mtls.DialOption(tlsFiles)
	if err != nil {
		return nil, usageError{err}
	}
	c, err := grpc.NewClient(addr, creds,
		grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return c, nil
}

func (g *globals) volumes() (volumev1.VolumeManagerServiceClient, func(), error) {
	c, err := dial(g.volumeManager, g.token)
	if err != nil {
		return nil, nil, err
	}
	return volumev1.NewVolumeManagerServiceClient(c), func() { c.Close() }, nil
}

func (g *globals) backups() (backupv1.BackupServiceClient, func(), error) {
	c, err := dial(g.backupService, g.token)
	if err != nil {
		return nil, nil, err
	}
	return backupv1.NewBackupServiceClient(c), func() { c.Close() }, nil
}

var (
	jsonOut = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	jsonIn  = protojson.UnmarshalOptions{DiscardUnknown: false}
)

// printJSON writes m as one line of JSON.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOut.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// printJSONObject writes one line of JSON: an object of the messages, by
// key.
func printJSONObject(w io.Writer, msgs map[string]proto.Message) error {
	obj := map[string]json.RawMessage{}
	for k, m := range msgs {
		b, err := jsonOut.Marshal(m)
		if err != nil {
			return err
		}
		obj[k] = b
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// said reports what a command did that returns nothing to show: the
// sentence in table output, obj with --output json.
func (g *globals) said(obj map[string]string, format string, args ...any) error {
	if g.output == "json" {
		b, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, string(b))
		return err
	}
	_, err := fmt.Fprintf(stdout, format+"\n", args...)
	return err
}

// table prints rows under a header, aligned.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// fields prints name/value pairs, aligned.
func fields(w io.Writer, kv ...string) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], kv[i+1])
	}
	tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

var stdout io.Writer = os.Stdout
