/*
 * fleet.h - an instance among the others on one etcd prefix.
 *
 * Each instance keeps /PREFIX/instances/ID (a JSON object: address,
 * version, the config revision it serves, start time) on a lease of
 * [basic] instance_ttl, renewed every third of it, so a dead instance's
 * key goes within that time. It also campaigns for /PREFIX/locks/singleton,
 * the lock of the work only one instance may do (ACME orders and the
 * like): taken with a compare-and-swap that the key does not exist, on
 * the same lease, so a dead holder's lock expires with it. The holder's
 * fencing token is the revision its lock key was created at: work it
 * starts carries it, and writes it makes compare against it, so a
 * holder that lost the lock without knowing (its lease expired in a
 * partition) cannot overwrite its successor's work.
 *
 * Threads: its own, started by weir__fleet_start; the other calls from
 * any thread.
 */
#ifndef WEIR_APP_ETCD_FLEET_H
#define WEIR_APP_ETCD_FLEET_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "app/config/config.h"
#include "app/etcd/etcd.h"

typedef struct weir_fleet weir_fleet;

/* Starts the fleet thread with client e (taken over); id NULL: hostname-pid.
 * cfg gives the instance's address and TTL. NULL on OOM. */
weir_fleet *weir__fleet_start(weir_etcd *e, const char *prefix, const char *id,
                              const weir_config *cfg, int64_t revision);
/* The config revision the instance serves now (its key is updated). */
void weir__fleet_set_revision(weir_fleet *f, int64_t revision);
/* Revokes the lease (the instance key and a held lock go) and frees f. */
void weir__fleet_stop(weir_fleet *f);
const char *weir__fleet_id(const weir_fleet *f);
/* The instance's lease (0 while it has none): keys put on it go with the
 * instance. */
int64_t weir__fleet_lease(weir_fleet *f);
/* Whether this instance holds the lock, and its fencing token. */
bool weir__fleet_lock_held(weir_fleet *f, int64_t *fencing);
/* {"name", "holder", "fencing", "held"} (a new reference), NULL for f NULL. */
json_t *weir__fleet_lock_json(weir_fleet *f);
/* The live instances under prefix, each its JSON object (a new
 * reference), or NULL with err set. Blocks up to e's timeout. */
json_t *weir__fleet_instances(weir_etcd *e, const char *prefix, char *err, size_t err_len);

#endif
