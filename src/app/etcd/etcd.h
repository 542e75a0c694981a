/*
 * etcd.h - a client of etcd's v3 JSON gateway (/v3/kv/range, /v3/kv/txn,
 * /v3/kv/deleterange, /v3/watch, /v3/lease/..., /v3/auth/authenticate) over
 * libcurl and jansson.
 *
 * A handle holds the cluster's endpoints and the credentials; a call tries
 * the endpoint that answered last, then the others in turn, so one member
 * down costs one failed connect. Calls block up to the handle's timeout:
 * never on a worker thread. One handle is used by one thread at a time
 * (the config source's thread, or the main thread for the admin API's
 * writes, each with its own).
 *
 * Keys and values are bytes (base64 on the wire); revisions are etcd's
 * int64 counters. Returns: 0 done, WEIR_ETCD_FAILED (the compare of a
 * compare-and-swap did not hold), WEIR_ETCD_COMPACTED (the revision asked
 * for was compacted away), or -1 with err set (no endpoint answered, or
 * an answer etcd should not give).
 */
#ifndef WEIR_APP_ETCD_H
#define WEIR_APP_ETCD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define WEIR_ETCD_FAILED 1
#define WEIR_ETCD_COMPACTED 2

typedef struct weir_etcd weir_etcd;

typedef struct weir_etcd_options {
    const char *const *endpoints; /* "http://host:port" or "https://host:port" */
    size_t n_endpoints;
    const char *user, *password;     /* both or neither */
    const char *cacert, *cert, *key; /* TLS: CA to verify etcd by; client certificate */
    uint32_t timeout_ms;             /* per call [5000] */
} weir_etcd_options;

typedef struct weir_etcd_kv {
    char *key, *value; /* NUL-terminated copies (may hold NUL: use the lengths) */
    size_t key_len, value_len;
    int64_t create_revision, mod_revision, lease;
} weir_etcd_kv;

typedef struct weir_etcd_kvs {
    weir_etcd_kv *v;
    size_t n;
    int64_t revision; /* the store's revision the answer is of */
} weir_etcd_kvs;

/* A handle (copies every string of o), or NULL with err set. */
weir_etcd *weir__etcd_new(const weir_etcd_options *o, char *err, size_t err_len);
void weir__etcd_free(weir_etcd *e);

/* Every key under prefix (prefix itself included), in key order, at
 * revision (0 = the newest). */
int weir__etcd_range(weir_etcd *e, const char *prefix, int64_t revision, weir_etcd_kvs *out,
                     char *err, size_t err_len);
/* The one key (out->n is 0 or 1). */
int weir__etcd_get(weir_etcd *e, const char *key, weir_etcd_kvs *out, char *err, size_t err_len);
void weir__etcd_kvs_free(weir_etcd_kvs *kvs);

/* Writes key = value when the key's mod revision is mod_revision (0: the
 * key must not exist; -1: no compare), attached to lease (0: none).
 * *revision (may be NULL) is the store's revision after the write. */
int weir__etcd_put_if(weir_etcd *e, const char *key, const char *value, size_t value_len,
                      int64_t mod_revision, int64_t lease, int64_t *revision, char *err,
                      size_t err_len);
/* Deletes key (or, with prefix, every key under it) when its mod revision
 * is mod_revision (-1: no compare; only without prefix). */
int weir__etcd_delete_if(weir_etcd *e, const char *key, bool prefix, int64_t mod_revision,
                         char *err, size_t err_len);

/* A transaction: when every compare (an array, or NULL) holds, the
 * operations (an array) run. Takes both references. */
int weir__etcd_txn(weir_etcd *e, json_t *compare, json_t *ops, int64_t *revision, char *err,
                   size_t err_len);
/* Its parts (new references, NULL on OOM): put key = value (lease 0:
 * none), delete key (or every key under it), and "key's mod revision is
 * mod_revision" (0: the key does not exist). */
json_t *weir__etcd_op_put(const char *key, const char *value, size_t value_len, int64_t lease);
json_t *weir__etcd_op_delete(const char *key, bool prefix);
json_t *weir__etcd_cmp_mod(const char *key, int64_t mod_revision);
/* "key (with prefix: every key under it) was not written after revision"
 * (a key created or changed since fails it; one deleted does not). */
json_t *weir__etcd_cmp_unchanged_since(const char *key, bool prefix, int64_t revision);
/* "key's create revision is create_revision": a fencing token's check. */
json_t *weir__etcd_cmp_create(const char *key, int64_t create_revision);

/* Leases: grant (*id, of ttl_s seconds), keep alive (*ttl_s left, 0 when
 * it expired), revoke (its keys go). */
int weir__etcd_lease_grant(weir_etcd *e, int64_t ttl_s, int64_t *id, char *err, size_t err_len);
int weir__etcd_lease_keepalive(weir_etcd *e, int64_t id, int64_t *ttl_s, char *err, size_t err_len);
int weir__etcd_lease_revoke(weir_etcd *e, int64_t id, char *err, size_t err_len);

/* One change a watch saw. */
typedef struct weir_etcd_event {
    bool deleted;
    weir_etcd_kv kv; /* a delete has the key and its mod revision only */
} weir_etcd_event;

/* Called for each batch of changes (one revision or more, in order); a
 * non-zero return ends the watch. */
typedef int (*weir_etcd_watch_cb)(void *arg, const weir_etcd_event *ev, size_t n, int64_t revision);
/*
 * Watches every key under prefix from start_revision on, calling cb as
 * changes come, until cb returns non-zero (returns 0), *stop becomes true
 * (checked at least every 200 ms; returns 0), the connection fails
 * (returns -1 with err set), or start_revision was compacted away
 * (WEIR_ETCD_COMPACTED; *compact_revision the oldest one left).
 * `created` (may be NULL) is called once the watch is set up.
 */
int weir__etcd_watch(weir_etcd *e, const char *prefix, int64_t start_revision,
                     weir_etcd_watch_cb cb, void (*created)(void *arg), void *arg,
                     const _Atomic bool *stop, int64_t *compact_revision, char *err,
                     size_t err_len);

/* base64 of len bytes (malloc'd, NUL-terminated), or NULL on OOM. */
char *weir__etcd_b64(const void *p, size_t len);

#endif
