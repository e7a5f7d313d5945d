package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func healthCmd() *cobra.Command {
	var address, url string
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check a daemon's health (gRPC --address or HTTP --http); exit 0 when serving",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
			defer cancel()
			if url != "" {
				return waitHTTP(ctx, url)
			}
			conn, err := dial(address, "")
			if err != nil {
				return err
			}
			defer conn.Close()
			r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				return err
			}
			if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("%s is %s", address, r.GetStatus())
			}
			fmt.Fprintln(stdout, "serving")
			return nil
		},
	}
	cmd.Flags().StringVar(&address, "address", "127.0.0.1:7100", "gRPC address of the daemon")
	cmd.Flags().StringVar(&url, "http", "", "HTTP health URL instead (the gateway's /healthz)")
	return cmd
}
