/*
 * source.h - the configuration from etcd: `weir -c etcd://HOST:PORT,HOST:PORT/PREFIX`.
 *
 * The config is the keys under /PREFIX/: servers/NAME, locations/NAME,
 * upstreams/NAME, certificates/NAME, plugins/NAME, caches/NAME, basic and
 * admin, each value the body of that section as the file would have it
 * (its keys, no header). instances/ and locks/ are the fleet's (fleet.h).
 * An instance's own --local file adds sections and replaces those of
 * etcd of the same name (its listeners, [admin], [basic] with the keys
 * that reach etcd: etcd_cacert, etcd_cert, etcd_key, config_cache,
 * instance_id, instance_ttl).
 *
 * Threads: open, the loads, reload and status on the main thread; one
 * thread of its own watches etcd and hands each new set of keys to the
 * main thread (weir_server_call_main), which builds and swaps the
 * snapshot exactly as SIGHUP does. A set that does not load is rejected
 * (logged, counted, in GET /api/fleet) and the running config stays.
 */
#ifndef WEIR_APP_ETCD_SOURCE_H
#define WEIR_APP_ETCD_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "app/app.h"
#include "app/config/config.h"
#include "app/etcd/etcd.h"

typedef struct weir_etcd_source weir_etcd_source;

/* "etcd://..." or "etcds://..." (https to the endpoints). */
bool weir__is_etcd_url(const char *s);

/* The parts of an etcd URL. */
typedef struct weir_etcd_url {
    char **endpoints; /* "http://host:port" */
    size_t n_endpoints;
    char *prefix; /* "/PREFIX", no trailing slash */
    char *user, *password;
} weir_etcd_url;
/* Messages name the URL with its password masked. The prefix is at most
 * 256 bytes, an endpoint at most 256. */
int weir__etcd_url_parse(const char *url, weir_etcd_url *u, char *err, size_t err_len);
/* The URL with every password's value as "***", malloc'd (NULL: out of
 * memory): what logs, messages and the admin API show. */
char *weir__etcd_url_masked(const char *url);
void weir__etcd_url_free(weir_etcd_url *u);
/* A client for u with the TLS files given (may be NULL). */
weir_etcd *weir__etcd_connect(const weir_etcd_url *u, const char *cacert, const char *cert,
                              const char *key, uint32_t timeout_ms, char *err, size_t err_len);

/*
 * The configuration text of a set of keys (kvs, the keys under prefix
 * "/PREFIX"), with local_text's sections first and in place of etcd's of
 * the same name; with header, a first comment line naming the URL and
 * revision (a cache file, `weir config pull`). Returns it malloc'd (*len),
 * or NULL with every error appended ("KEY:LINE: message"). *map (may be
 * NULL) receives what weir__etcd_map_errors needs.
 */
typedef struct weir_etcd_map weir_etcd_map;
char *weir__etcd_assemble(const weir_etcd_kvs *kvs, const char *prefix, const char *url,
                          const char *local_path, const char *local_text, size_t local_len,
                          bool header, size_t *len, weir_etcd_map **map, weir_cfg_errors *errs);
/* Rewrites the errors of a load of that text ("<etcd>:LINE: ...") to
 * name the key and the line in its value. */
void weir__etcd_map_errors(const weir_etcd_map *map, weir_cfg_errors *errs);
void weir__etcd_map_free(weir_etcd_map *map);
/* Whether a key's part after "/PREFIX/" is the fleet's, not configuration:
 * instances/ID, locks/NAME, acme/NAME (the fleet's certificates). */
bool weir__etcd_fleet_key(const char *rest, size_t len);
/* Whether a section name can be the last part of a key: 1 to 200 bytes,
 * no '/', quote, backslash or control character. */
bool weir__etcd_name_ok(const char *name, size_t len);
/* The file name the assembled text is loaded as. */
#define WEIR_ETCD_TEXT_NAME "<etcd>"

/* A cache file (or `pull` output) back into keys under prefix. */
int weir__etcd_read_cache(const char *path, const char *prefix, weir_etcd_kvs *out, char *err,
                          size_t err_len);

/*
 * Opens the source: reads the --local file (local_path may be NULL),
 * reads every key under the prefix at one revision and loads them, or,
 * when etcd cannot be reached and [basic] config_cache names a cache,
 * loads that. Returns the source with *cfg the first snapshot, or NULL
 * with every error in errs. Main thread.
 */
weir_etcd_source *weir__etcd_source_open(const char *url, const char *local_path, weir_config **cfg,
                                         weir_cfg_errors *errs);
/* Starts watching (and the fleet: instance key, lock). Main thread, once
 * srv runs. */
int weir__etcd_source_start(weir_etcd_source *s, weir_app *app, weir_server *srv);
/* SIGHUP and POST /api/reload: the keys held, with the local file read
 * again. errs may be NULL. */
int weir__etcd_source_reload(weir_etcd_source *s, weir_cfg_errors *errs);
/* Stops the threads (the instance key goes with its lease). Main thread. */
void weir__etcd_source_stop(weir_etcd_source *s);
void weir__etcd_source_free(weir_etcd_source *s);

/* The URL as given (password masked). */
const char *weir__etcd_source_name(const weir_etcd_source *s);
/* The state for GET /api/fleet: revisions seen and served, rejected
 * changes with their errors, whether etcd is reachable. */
json_t *weir__etcd_source_status(weir_etcd_source *s);

/* The value and mod revision of the key /PREFIX/section/name in the keys
 * the running snapshot was built from (*mod_revision 0: absent). Main
 * thread. Returns a malloc'd copy, NULL when absent. */
char *weir__etcd_source_value(weir_etcd_source *s, const char *section, const char *name,
                              int64_t *mod_revision, bool *from_local);
/* Writes that key when its mod revision is still mod_revision: 0, or
 * WEIR_ETCD_FAILED (another write came first), or -1. Main thread
 * (blocks up to a second). */
int weir__etcd_source_put(weir_etcd_source *s, const char *section, const char *name,
                          const char *value, size_t len, int64_t mod_revision, int64_t *revision,
                          char *err, size_t err_len);
/* Deletes that key when its mod revision is still mod_revision: 0,
 * WEIR_ETCD_FAILED, or -1. Main thread. */
int weir__etcd_source_delete(weir_etcd_source *s, const char *section, const char *name,
                             int64_t mod_revision, int64_t *revision, char *err, size_t err_len);
/* The key's value and mod revision as etcd holds them now (a read;
 * NULL with err "" when absent, with err set when etcd cannot be read).
 * Main thread. */
char *weir__etcd_source_fresh(weir_etcd_source *s, const char *section, const char *name,
                              int64_t *mod_revision, char *err, size_t err_len);
/* Whether the keys of the running snapshot with section/name = value
 * (NULL: without that key) load: 0, or -1 with every error. Main thread. */
int weir__etcd_source_check(weir_etcd_source *s, const char *section, const char *name,
                            const char *value, size_t len, weir_cfg_errors *errs);
/* The main thread's client (main thread only). */
weir_etcd *weir__etcd_source_main(weir_etcd_source *s);
/* "/PREFIX/". */
const char *weir__etcd_source_dir(const weir_etcd_source *s);
/* The configuration keys of kvs (NULL: those the running snapshot was
 * built from) as one TOML text ([section.name] and each key's value, in
 * key order; the --local file's sections are not in it), and the newest
 * mod revision among them. malloc'd, NULL on OOM. */
char *weir__etcd_source_text(weir_etcd_source *s, const weir_etcd_kvs *kvs, size_t *len,
                             int64_t *last_mod);
/* Makes the configuration keys what text says (its sections' keys
 * written, the other configuration keys deleted), in one transaction
 * that holds only if no configuration key was written since it read them:
 * 0 (*revision the store's after it), WEIR_ETCD_FAILED (a change came
 * first: nothing written), or -1 (err). Main thread. */
int weir__etcd_source_replace(weir_etcd_source *s, const char *text, size_t len, int64_t *revision,
                              char *err, size_t err_len);
/* Whether a whole configuration of etcd's (such a text) loads with this
 * instance's --local file: 0, or -1 with every error. Main thread. */
int weir__etcd_source_check_text(weir_etcd_source *s, const char *text, size_t len,
                                 weir_cfg_errors *errs);
/* For work of the fleet on another thread: a client of its own (free it),
 * the prefix ("/PREFIX"), and whether this instance holds the singleton
 * lock (*fencing: the lock key's create revision, for a compare). Any
 * thread. */
weir_etcd *weir__etcd_source_client(weir_etcd_source *s, char *err, size_t err_len);
const char *weir__etcd_source_prefix(const weir_etcd_source *s);
bool weir__etcd_source_lock(weir_etcd_source *s, int64_t *fencing);
/* This instance's id in the fleet, or NULL when it has no fleet. */
const char *weir__etcd_source_instance(const weir_etcd_source *s);
/* Its lease (0: none yet): keys put on it go when the instance does. */
int64_t weir__etcd_source_lease(weir_etcd_source *s);

/* GET /api/fleet: the live instances, the lock, and the status above.
 * Main thread (reads etcd, up to a second). */
json_t *weir__etcd_fleet_json(weir_etcd_source *s);

#endif
