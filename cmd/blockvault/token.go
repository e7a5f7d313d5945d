package main

import (
	"fmt"
	"time"

	"github.com/blockvault/blockvault/pkg/auth"
	"github.com/spf13/cobra"
)

// tokenCmd mints signed tokens for daemons that check them with a signing
// key (--auth-signing-key-file).
func tokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Make auth tokens signed with the daemons' signing key"}
	var keyFile, roles, user string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Print a token for --project and --roles, signed with the key in --signing-key-file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyFile == "" {
				return usageError{fmt.Errorf("--signing-key-file is required")}
			}
			rs, err := auth.ParseRoles(roles)
			if err != nil {
				return usageError{err}
			}
			if ttl < 0 {
				return usageError{fmt.Errorf("--ttl %s must not be negative", ttl)}
			}
			key, err := auth.ReadKey(keyFile)
			if err != nil {
				return usageError{err}
			}
			id := auth.Identity{Project: g.project, Roles: rs, User: user}
			if ttl > 0 {
				id.Expires = time.Now().Add(ttl).Unix()
			}
			fmt.Fprintln(stdout, auth.Mint(key, id))
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&keyFile, "signing-key-file", "", "the key the daemons check tokens with (--auth-signing-key-file)")
	f.StringVar(&roles, "roles", auth.RoleMember, "comma-separated roles: member, admin, service")
	f.StringVar(&user, "user", "", "a user name, for the logs")
	f.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is good for (0: no expiry)")
	cmd.AddCommand(create)
	return cmd
}
