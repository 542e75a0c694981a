/*
 * read.h - the configuration loader's shared helpers (read.c):
 * errors with the file's line, key checks with suggestions, and typed
 * getters with range checks. Private to src/app/config/.
 */
#ifndef WEIR_APP_CONFIG_READ_H
#define WEIR_APP_CONFIG_READ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/config/config.h"
#include "app/config/schema.h"
#include "app/toml/toml.h"

/* One load in progress: where errors go. */
typedef struct loader {
    const char *file;
    weir_cfg_errors *errs;
    weir_config *cfg;
    int temp_dir_line;     /* of [basic] temp_dir, 0 if absent */
    bool temp_dir_checked; /* a location needed it and it was tried */
} loader;

/* Records "FILE:LINE: message" (no line when line <= 0); loading goes on. */
void weir__cfg_err_at(loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs "FILE:LINE: warning: message": something that loads but may not
 * do what was meant. */
void weir__cfg_warn_at(loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The known word closest to key (for "did you mean"), or NULL. */
const char *weir__cfg_suggest(const char *key, const char *const *known);

/* Reports entries of table t whose key is not in known (a table ending
 * with a NULL name). */
void weir__cfg_check_keys(loader *ld, const weir_toml_value *t, const char *section,
                          const weir_cfg_key *known);

/* The typed getters below report their own errors and return false when
 * the key is absent or invalid. */

/* The entry of key in table t (for its line). */
bool weir__cfg_entry_of(const weir_toml_value *t, const char *key, weir_toml_entry *e);

/* A copy of a string value; *present says whether the key was there. */
char *weir__cfg_dup_string(loader *ld, const weir_toml_value *t, const char *key,
                           const char *section, bool *present);

/* Reads an integer in [min, max]; returns false if absent or invalid. */
bool weir__cfg_get_int(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                       int64_t min, int64_t max, int64_t *out);

/* Reads a boolean. */
bool weir__cfg_get_bool(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                        bool *out);

/* Parses "250ms", "10s", "5m", "1h" (or a combination like "1m30s"). */
bool weir__cfg_parse_duration(const char *s, uint64_t *ms);

/* A duration: a string with units, at most max_ms (and > 0 unless zero_ok). */
bool weir__cfg_get_duration(loader *ld, const weir_toml_value *t, const char *key,
                            const char *section, uint64_t max_ms, bool zero_ok, uint32_t *out);

/* A size: an integer of bytes or a string "512", "64KB", "10MB", "1GB". */
bool weir__cfg_get_size(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                        uint64_t max, uint64_t *out);

/* A string or an array of strings, as a NULL-free array of copies. */
char **weir__cfg_get_string_list(loader *ld, const weir_toml_value *t, const char *key,
                                 const char *section, size_t *n_out, int *line);

/* Frees what weir__cfg_get_string_list returned. */
void weir__cfg_free_list(char **v, size_t n);

/* tls.c: [certificates.NAME] and a server's TLS keys. */
void weir__cfg_load_cert_section(loader *ld, weir_cfg_cert *c, const weir_toml_value *t);
weir_cfg_cert *weir__cfg_find_cert(loader *ld, const char *name, int line, const char *section);
void weir__cfg_check_unlisted_certs(loader *ld, const weir_toml_value *servers);
/* discovery.c: discovery, update_frequency and the dns_* keys of
 * [upstreams.NAME] (read before addrs), and the lookup service built
 * from addrs (after). */
void weir__cfg_load_discovery(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                              const char *section);
bool weir__cfg_discovery_entry(loader *ld, weir_cfg_upstream *u, const char *text, int line,
                               const char *section);
void weir__cfg_start_discovery(loader *ld, weir_cfg_upstream *u, const char *section);
extern const char *const weir__cfg_discovery_keys[];

void weir__cfg_load_server_tls(loader *ld, weir_cfg_server *s, const weir_toml_value *t,
                               const char *section);

/* Splits the items of a string list at commas, trimming blanks and
 * dropping empty pieces: Pingap writes "a.example.com,b.example.com" where
 * weir takes a list. False on out of memory. */
bool weir__cfg_split_commas(char ***list, size_t *n);

/* ---- the sections, each in its own file (config.c loads the document) ---- */

/* A location spills request bodies to files in [basic] temp_dir: check
 * that it can hold them (once per load). config.c. */
void weir__cfg_check_temp_dir(loader *ld, int line);
/* An HTTP token (RFC 9110 field names, methods). location.c. */
bool weir__cfg_valid_token(const char *s);
/* [locations.NAME] into l; the upstream's name and line for resolving. */
void weir__cfg_load_location(loader *ld, weir_cfg_location *l, const weir_toml_value *t,
                             char **upstream_name, int *upstream_line);
void weir__cfg_free_headers(weir_cfg_headers *h);
/* Why a header rule may not touch field `name` (a framing or hop-by-hop
 * field; Host unless set on a request), or NULL. */
const char *weir__cfg_forbidden_field(const char *name, bool is_set_on_request);
/* "Name: value" strings (with_value: set, add) or "Name" strings (remove)
 * of `key` into *out; values may hold variables (app/vars.h). Framing and
 * hop-by-hop fields are refused; Host only when may_set_host. */
void weir__cfg_load_headers(loader *ld, const weir_toml_value *t, const char *key,
                            const char *section, bool with_value, bool may_set_host,
                            weir_cfg_headers *out);
/* [upstreams.NAME] into u. upstream.c. */
void weir__cfg_load_upstream(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t);
/* [servers.NAME] into s; its location names and their line, and a TCP
 * server's upstream name (the caller frees it) and its line. server.c. */
void weir__cfg_load_server(loader *ld, weir_cfg_server *s, const weir_toml_value *t,
                           char ***loc_names, size_t *n_loc_names, int *loc_line, char **up_name,
                           int *up_line);

/* ---- plugins (plugins.c) ---- */

/* [plugins.NAME] tables into cfg->plugins (before the locations). */
void weir__cfg_load_plugins(loader *ld, const weir_toml_value *sec);
/* A location's chain: its built-in rules, then the plugins it names
 * (l->plugin_names; `line` for errors), sorted into chains by step. */
void weir__cfg_location_chains(loader *ld, weir_cfg_location *l, int line);
void weir__cfg_free_location_chains(weir_cfg_location *l);
void weir__cfg_free_plugins(weir_config *c);

/* ---- cache stores (caches.c) ---- */

/* [caches.NAME] into cfg->caches (before the plugins). */
void weir__cfg_load_caches(loader *ld, const weir_toml_value *sec);
/* The section called name, or for "default" a new one with the defaults;
 * NULL if there is none. The array may move: keep the name. */
struct weir_cfg_cache *weir__cfg_cache_find(loader *ld, const char *name);
void weir__cfg_free_caches(weir_config *c);

#endif
