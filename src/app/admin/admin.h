/*
 * admin.h - the admin API: a JSON-over-HTTP service on its own listener
 * ([admin] addr) to inspect the running configuration, reload it, and
 * change upstream membership at runtime (docs/admin-api.md).
 *
 * It is one more proxy service on the weir server whose phases answer every
 * request themselves. Reads run on the worker that owns the request; reloads
 * and membership changes run on the server's main thread
 * (weir_server_call_main), one at a time, while the request pends.
 */
#ifndef WEIR_APP_ADMIN_H
#define WEIR_APP_ADMIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "app/config/config.h"
#include "app/app.h"
#include "weir/weir.h"

typedef struct weir_admin weir_admin;

/*
 * Adds the admin service on the current configuration's [admin] addr to
 * srv (main thread, before weir_server_run). config_path is the file that
 * POST /api/reload reads and persist = true rewrites; NULL when weir runs
 * without -c (both are then refused). app, srv and config_path must
 * outlive the returned object. Returns NULL (reason logged) on failure.
 */
weir_admin *weir__admin_start(weir_app *app, weir_server *srv, const char *config_path);
/* Frees it, after the server stopped. NULL is fine. */
void weir__admin_free(weir_admin *adm);
/* The config is etcd's: POST /api/reload reloads from it, membership
 * writes go to it (compare-and-swap), GET /api/fleet answers. */
typedef struct weir_etcd_source weir_etcd_source;
void weir__admin_set_etcd(weir_admin *adm, weir_etcd_source *src);
/* etcd_write.c: upstream `name`'s addrs = addrs written to its etcd key,
 * if that key did not change since the running snapshot read it: 200,
 * 409 (another write came first, or the upstream is not in etcd), 400
 * (the result would not load), 503 (etcd away); *body the JSON answer. */
void weir__admin_etcd_write(weir_etcd_source *src, const char *name, const char *const *addrs,
                            size_t n_addrs, int *status, char **body);

/*
 * Compares a presented token with the expected one in time that depends
 * only on the lengths: every byte of equal-length inputs is looked at; on
 * a length mismatch a dummy comparison runs and the result is false.
 */
bool weir__admin_token_equal(const char *given, size_t given_len, const char *expected,
                             size_t expected_len);

/*
 * Rewrites the `addrs = [...]` key of [upstreams.NAME] in the TOML text
 * to the given addresses (each "ip:port" or "ip:port weight"), keeping
 * everything else byte for byte (comments, the rest of the section). The
 * old value may span several lines. Returns 0 and a malloc'd *out (NUL-
 * terminated, length *out_len), or -1 with a reason in err when the
 * section or key is missing, written in a form this does not handle
 * (dotted keys, inline tables), or the text is not well formed.
 */
int weir__admin_rewrite_addrs(const char *text, size_t len, const char *upstream,
                              const char *const *addrs, size_t n_addrs, char **out, size_t *out_len,
                              char *err, size_t err_len);

/* cache_api.c: GET /api/cache (every store's figures) and DELETE
 * /api/cache?key=K|prefix=P[&storage=NAME] (the HTTP status; *out the
 * JSON answer). */
json_t *weir__admin_cache_json(const weir_config *c);
int weir__admin_cache_purge(const weir_config *c, weir_str query, json_t **out);

/* config_json.c: a snapshot as JSON (a new reference, NULL on OOM). */
json_t *weir__config_to_json(const weir_config *c);
/* GET /api/schema: every kind of section's keys and their types, and each
 * plugin category's (schema_json.c). */
json_t *weir__schema_json(void);
/*
 * config_api.c, on the main thread: the file weir runs (path). Each
 * returns the HTTP status and sets *out to the JSON answer.
 *   file_get: {"file", "text", "sha256"}.
 *   apply: text checked (errors named as path), written atomically with
 *     FILE.prev, reloaded; a failed reload puts the old file back. base,
 *     if not NULL, must be the sha256 of the file now (else 409).
 *     action ("apply", "rollback") and rollback_of go in the history.
 *   diff: the sections text adds, changes and removes against running.
 *   history_*: [admin] history_dir (else FILE.history), newest first.
 */
int weir__admin_file_get(const char *path, json_t **out);
int weir__admin_apply(weir_app *app, weir_server *srv, const char *path, const char *text,
                      size_t len, const char *base, const char *action, long rollback_of,
                      json_t **out);
int weir__admin_diff(const weir_config *running, const char *text, size_t len, json_t **out);
int weir__admin_history_list(const weir_config *cfg, const char *path, json_t **out);
int weir__admin_history_get(const weir_config *cfg, const char *path, long id, json_t **out);
int weir__admin_rollback(weir_app *app, weir_server *srv, const char *path, long id,
                         const char *base, json_t **out);
/*
 * sections_api.c, on the main thread: one section, [kind.name] (name NULL
 * for basic and admin), of the file at path or, with etcd, its key. get:
 * {"kind", "name", "values", "text"[, "mod_revision", "local"]}. change:
 * values (an object; NULL deletes) written, with base (the file's
 * sha256, or the key's mod_revision with etcd; NULL: any).
 */
bool weir__admin_section_kind(const char *kind, bool *has_name);
int weir__admin_section_get(const char *path, weir_etcd_source *etcd, const char *kind,
                            const char *name, json_t **out);
int weir__admin_section_change(weir_app *app, weir_server *srv, const char *path,
                               weir_etcd_source *etcd, const char *kind, const char *name,
                               json_t *values, json_t *base, bool dry_run, json_t **out);
/* GET /api/config/sections: every section of the running snapshot. */
int weir__admin_section_list(weir_app *app, weir_etcd_source *etcd, json_t **out);
/* s as a JSON string, bytes that are not UTF-8 as U+FFFD (jansson takes
 * only UTF-8; an error message may hold a file's bytes, or be cut inside
 * a character). */
json_t *weir__admin_text_json(const char *s, size_t n);
/* The errors as a JSON array of such strings. */
json_t *weir__admin_errors_json(const weir_cfg_errors *errs);
/* The configuration file's text for the API (at most 1 MiB, its body
 * limit), or NULL with *why (if not NULL) the JSON error. */
char *weir__admin_read_config(const char *path, size_t *len, json_t **why);
/* The sha256 of text as 64 lower-case hex digits. */
void weir__admin_sha256_hex(const char *text, size_t len, char out[65]);
/* The answer to a write to etcd that returned rc (sections_api.c): 200
 * when it took, else 409 (lost, the message: another write came first)
 * or 503 (etcd away) with *out set. */
int weir__admin_etcd_refusal(int rc, const char *err, const char *lost, json_t **out);
/* etcd_history.c: the history of a configuration in etcd (main thread):
 * before/after record the state before a change (when the newest entry
 * is not it) and after it (at revision rev). */
void weir__admin_etcd_history_before(weir_etcd_source *src, const weir_config *cfg);
void weir__admin_etcd_history_after(weir_etcd_source *src, const weir_config *cfg, int64_t rev,
                                    const char *action, int64_t rollback_of);
int weir__admin_etcd_history_list(weir_etcd_source *src, const weir_config *cfg, json_t **out);
int weir__admin_etcd_history_get(weir_etcd_source *src, int64_t id, json_t **out);
int weir__admin_etcd_rollback(weir_etcd_source *src, const weir_config *cfg, int64_t id,
                              json_t **out);
/* GET /api/status (main thread): version, pid, start, the running
 * snapshot's revision and source, the last reload's outcome. */
json_t *weir__admin_status_json(weir_app *app, const char *path, const char *etcd_source);
/* Records the file as it is now in the history, if it differs from the
 * newest entry (at start, and after a reload through the API). */
void weir__admin_history_note(const weir_config *cfg, const char *path, const char *action);
/* The algo as the file writes it ("round_robin", "hash:header:X"). */
size_t weir__admin_algo_text(const weir_cfg_upstream *u, char *buf, size_t buf_len);

#endif
