package backupjob

import (
	"context"
	"fmt"
	"time"
)

// Several backup services may share one database and one repository. Each
// job row names the node that runs it (owner_node) and a lease
// (lease_expires_at) that the node's heartbeat keeps renewing. When a node
// dies for good its leases lapse, and another node claims each of its
// unfinished jobs (one conditional update: one node wins) and finishes it
// the way a restart would: a backup becomes error with its temporary
// resources removed, a restore gives the backup back, a delete is resumed.
// A node that cannot renew its leases for two thirds of their length stops
// its own jobs, so a job never runs on two nodes at once.

// RunLeases renews this node's leases and takes over the jobs of nodes
// whose leases lapsed, until ctx is done.
func (r *Runner) RunLeases(ctx context.Context) error {
	d := r.cfg.leaseDuration()
	tick := time.NewTicker(d / 3)
	defer tick.Stop()
	lastRenewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if _, err := r.db.RenewLeases(ctx, r.cfg.NodeID, unfinished, r.Lease()); err != nil {
			if time.Since(lastRenewed) > d*2/3 {
				if n := r.cancelAll(); n > 0 {
					r.log.Error("leases not renewed for too long: stopping this node's jobs so that no other node runs them twice", "jobs", n, "err", err)
				}
			} else {
				r.log.Warn("renewing job leases", "err", err)
			}
			continue
		}
		lastRenewed = time.Now()
		r.takeOver(ctx)
	}
}

// takeOver claims and finishes the unfinished jobs whose owners' leases
// lapsed.
func (r *Runner) takeOver(ctx context.Context) {
	now := time.Now().UTC()
	rows, err := r.db.Expired(ctx, r.cfg.NodeID, unfinished, now)
	if err != nil {
		r.log.Warn("looking for lapsed leases", "err", err)
		return
	}
	for i := range rows {
		b := &rows[i]
		old := b.OwnerNode
		won, err := r.db.Claim(ctx, b.ID, old, r.cfg.NodeID, now, r.Lease())
		if err != nil || !won {
			continue // another node was faster, or the owner came back
		}
		r.log.Warn("taking over a job whose node stopped renewing its lease", "backup_id", b.ID, "status", b.Status, "node", old)
		b.OwnerNode = r.cfg.NodeID
		r.recoverJob(ctx, b,
			fmt.Sprintf("backup interrupted: its backup-service node %s stopped (lease expired); cleaned up by node %s", old, r.cfg.NodeID),
			fmt.Sprintf("restore interrupted: its backup-service node %s stopped (lease expired)", old))
	}
}
