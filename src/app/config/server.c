/*
 * server.c - [servers.NAME]: listeners, limits, timeouts, header trust and
 * TLS (see config.h).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "app/access_log.h"
#include "app/config/read.h"
#include "app/otel/export.h"
#include "app/toml/toml.h"
#include "weir/addr.h"

/* ---- [servers.NAME] ---- */

const weir_cfg_key weir__cfg_keys_server[] = {
    {"addr", WEIR_CT_STRINGS, NULL},
    {"locations", WEIR_CT_STRINGS, NULL},
    {"access_log", WEIR_CT_STRING, NULL},
    {"access_log_file", WEIR_CT_STRING, NULL},
    {"client_header_timeout", WEIR_CT_DURATION, NULL},
    {"client_body_timeout", WEIR_CT_DURATION, NULL},
    {"keepalive_timeout", WEIR_CT_DURATION, NULL},
    {"send_timeout", WEIR_CT_DURATION, NULL},
    {"max_header_size", WEIR_CT_SIZE, NULL},
    {"max_headers", WEIR_CT_INTEGER, NULL},
    {"max_body_size", WEIR_CT_SIZE, NULL},
    {"certificates", WEIR_CT_STRINGS, NULL},
    {"tls_min_version", WEIR_CT_STRING, "1.2|1.3"},
    {"tls_ciphers", WEIR_CT_STRING, NULL},
    {"tls_ciphersuites", WEIR_CT_STRING, NULL},
    {"tls_session_tickets", WEIR_CT_BOOLEAN, NULL},
    {"tls_handshake_timeout", WEIR_CT_DURATION, NULL},
    {"client_ca", WEIR_CT_STRING, NULL},
    {"client_verify", WEIR_CT_STRING, "require|optional"},
    {"alpn", WEIR_CT_STRINGS, NULL},
    {"redirect_https", WEIR_CT_BOOLEAN, NULL},
    {"https_port", WEIR_CT_INTEGER, NULL},
    {"h2c", WEIR_CT_BOOLEAN, NULL},
    {"h2_max_concurrent_streams", WEIR_CT_INTEGER, NULL},
    {"tunnel_idle_timeout", WEIR_CT_DURATION, NULL},
    {"trusted_proxies", WEIR_CT_STRINGS, NULL},
    {"merge_slashes", WEIR_CT_BOOLEAN, NULL},
    {"underscores_in_headers", WEIR_CT_BOOLEAN, NULL},
    {"max_uri_size", WEIR_CT_SIZE, NULL},
    {"keepalive_requests", WEIR_CT_INTEGER, NULL},
    {"keepalive_time", WEIR_CT_DURATION, NULL},
    {"h2_max_connection_age", WEIR_CT_DURATION, NULL},
    {"h2_max_connection_age_grace", WEIR_CT_DURATION, NULL},
    {"proxy_protocol", WEIR_CT_BOOLEAN, NULL},
    {"protocol", WEIR_CT_STRING, "http|tcp|udp|tls_passthrough|resp"},
    {"upstream", WEIR_CT_STRING, NULL},
    {"idle_timeout", WEIR_CT_DURATION, NULL},
    {"upload_rate", WEIR_CT_SIZE, NULL},
    {"download_rate", WEIR_CT_SIZE, NULL},
    {"proxy_protocol_timeout", WEIR_CT_DURATION, NULL},
    {"tls", WEIR_CT_BOOLEAN, NULL},
    {"tls_passthrough", WEIR_CT_TABLE, NULL},
    {"sni_routes", WEIR_CT_TABLE, NULL},
    {"responses", WEIR_CT_INTEGER, NULL},
    {"max_sessions", WEIR_CT_INTEGER, NULL},
    {"max_command_size", WEIR_CT_SIZE, NULL},
    {"otlp_exporter", WEIR_CT_STRING, NULL},
    {"server_timing", WEIR_CT_BOOLEAN, NULL},
    {"prometheus_metrics", WEIR_CT_STRING, NULL},
    {"prometheus_allow", WEIR_CT_STRINGS, NULL},
    {NULL, 0, NULL}};

/* What a UDP server takes. */
const weir_cfg_key weir__cfg_keys_udp[] = {
    {"addr", WEIR_CT_STRINGS, NULL},
    {"protocol", WEIR_CT_STRING, "http|tcp|udp|tls_passthrough|resp"},
    {"upstream", WEIR_CT_STRING, NULL},
    {"access_log", WEIR_CT_STRING, NULL},
    {"access_log_file", WEIR_CT_STRING, NULL},
    {"idle_timeout", WEIR_CT_DURATION, NULL},
    {"responses", WEIR_CT_INTEGER, NULL},
    {"max_sessions", WEIR_CT_INTEGER, NULL},
    {NULL, 0, NULL}};

/* What a RESP (ring) server takes. */
const weir_cfg_key weir__cfg_keys_resp[] = {
    {"addr", WEIR_CT_STRINGS, NULL},
    {"protocol", WEIR_CT_STRING, "http|tcp|udp|tls_passthrough|resp"},
    {"upstream", WEIR_CT_STRING, NULL},
    {"idle_timeout", WEIR_CT_DURATION, NULL},
    {"max_command_size", WEIR_CT_SIZE, NULL},
    {NULL, 0, NULL}};

/* What a TCP server takes; the rest of weir__cfg_keys_server is HTTP's. */
const weir_cfg_key weir__cfg_keys_tcp[] = {
    {"addr", WEIR_CT_STRINGS, NULL},
    {"protocol", WEIR_CT_STRING, "http|tcp|udp|tls_passthrough|resp"},
    {"upstream", WEIR_CT_STRING, NULL},
    {"access_log", WEIR_CT_STRING, NULL},
    {"access_log_file", WEIR_CT_STRING, NULL},
    {"idle_timeout", WEIR_CT_DURATION, NULL},
    {"upload_rate", WEIR_CT_SIZE, NULL},
    {"download_rate", WEIR_CT_SIZE, NULL},
    {"trusted_proxies", WEIR_CT_STRINGS, NULL},
    {"proxy_protocol", WEIR_CT_BOOLEAN, NULL},
    {"proxy_protocol_timeout", WEIR_CT_DURATION, NULL},
    {"tls", WEIR_CT_BOOLEAN, NULL},
    {"certificates", WEIR_CT_STRINGS, NULL},
    {"tls_min_version", WEIR_CT_STRING, "1.2|1.3"},
    {"tls_ciphers", WEIR_CT_STRING, NULL},
    {"tls_ciphersuites", WEIR_CT_STRING, NULL},
    {"tls_session_tickets", WEIR_CT_BOOLEAN, NULL},
    {"tls_handshake_timeout", WEIR_CT_DURATION, NULL},
    {"client_ca", WEIR_CT_STRING, NULL},
    {"client_verify", WEIR_CT_STRING, "require|optional"},
    {"alpn", WEIR_CT_STRINGS, NULL},
    {"sni_routes", WEIR_CT_TABLE, NULL},
    {NULL, 0, NULL}};

/* What an HTTP server refuses of weir__cfg_keys_server. */
const char *const weir__cfg_keys_server_l4_only[] = {
    "upstream",  "idle_timeout", "upload_rate",      "download_rate", "proxy_protocol_timeout",
    "responses", "max_sessions", "max_command_size", "tls",           "sni_routes",
    NULL};

/* The TLS keys a tls_passthrough server has no use for. */
const char *const weir__cfg_keys_termination[] = {
    "tls",         "certificates",     "tls_min_version",
    "tls_ciphers", "tls_ciphersuites", "tls_session_tickets",
    "client_ca",   "client_verify",    "alpn",
    NULL};

/* name = "upstream" pairs of a table (sni_routes, tls_passthrough): the
 * upstream names are looked up by the caller. */
static void load_sni_routes(loader *ld, weir_cfg_server *s, const weir_toml_value *t,
                            const char *key, const char *section)
{
    const weir_toml_value *v = weir_toml_table_get(t, key);
    if (!v)
        return;
    weir_toml_entry ke;
    weir__cfg_entry_of(t, key, &ke);
    if (weir_toml_type_of(v) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, ke.line,
                         "'%s' in [%s] must be a table of server names and upstreams, e.g. "
                         "{ \"a.example.com\" = \"a\", \"*.example.org\" = \"b\" }",
                         key, section);
        return;
    }
    size_t n = weir_toml_table_count(v);
    s->sni_routes = calloc(n ? n : 1, sizeof(*s->sni_routes));
    if (!s->sni_routes)
        return;
    for (size_t i = 0; i < n; i++) {
        weir_toml_entry e;
        weir_toml_table_entry(v, i, &e);
        weir_cfg_sni_route *r = &s->sni_routes[s->n_sni_routes];
        r->line = e.line ? e.line : ke.line;
        const char *up =
            weir_toml_type_of(e.value) == WEIR_TOML_STRING ? weir_toml_string(e.value, NULL) : NULL;
        bool wild = e.key_len > 2 && e.key[0] == '*' && e.key[1] == '.';
        const char *name = wild ? e.key + 1 : e.key;
        size_t len = wild ? e.key_len - 1 : e.key_len;
        bool ok = len > 0 && len <= 253 && up;
        for (size_t k = wild ? 1 : 0; ok && k < len; k++) {
            char c = name[k];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || (c == '.' && k + 1 < len && name[k + 1] != '.');
        }
        if (!ok) {
            weir__cfg_err_at(ld, r->line,
                             "'%s' in [%s]: '%.*s' = ... must name a server (\"a.example.com\" "
                             "or \"*.example.com\") and an upstream (a string)",
                             key, section, (int)e.key_len, e.key);
            continue;
        }
        r->name = malloc(len + 1);
        r->upstream_name = strdup(up);
        if (!r->name || !r->upstream_name) {
            free(r->name);
            free(r->upstream_name);
            continue;
        }
        for (size_t k = 0; k < len; k++)
            r->name[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] - 'A' + 'a' : name[k]);
        r->name[len] = '\0';
        r->wild = wild;
        for (size_t j = 0; j < s->n_sni_routes; j++) {
            if (strcmp(s->sni_routes[j].name, r->name) == 0 && s->sni_routes[j].wild == wild)
                weir__cfg_err_at(ld, r->line, "'%s' in [%s] names '%.*s' twice", key, section,
                                 (int)e.key_len, e.key);
        }
        s->n_sni_routes++;
    }
    if (n == 0)
        weir__cfg_err_at(ld, ke.line, "'%s' in [%s] is empty", key, section);
}

const weir_cfg_sni_route *weir__cfg_sni_route(const weir_cfg_server *s, const char *sni)
{
    const weir_cfg_sni_route *best = NULL;
    size_t best_len = 0, n = sni ? strlen(sni) : 0;
    for (size_t i = 0; sni && i < s->n_sni_routes; i++) {
        const weir_cfg_sni_route *r = &s->sni_routes[i];
        size_t len = strlen(r->name);
        if (!r->wild && strcmp(r->name, sni) == 0)
            return r;
        /* ".example.com" takes any name under it, the longest suffix first. */
        if (r->wild && n > len && strcmp(sni + n - len, r->name) == 0 && len > best_len) {
            best = r;
            best_len = len;
        }
    }
    return best;
}

static bool listed(const weir_cfg_key *keys, const char *k, size_t len)
{
    for (size_t i = 0; keys[i].name; i++) {
        if (strlen(keys[i].name) == len && memcmp(keys[i].name, k, len) == 0)
            return true;
    }
    return false;
}

/* protocol = "tcp": its keys, then its settings (the upstream is looked up
 * by the caller). */
static void load_tcp(loader *ld, weir_cfg_server *s, const weir_toml_value *t, const char *section,
                     char **up_name, int *up_line)
{
    size_t n = weir_toml_table_count(t);
    for (size_t i = 0; i < n; i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        if (listed(weir__cfg_keys_server, e.key, e.key_len) &&
            !listed(weir__cfg_keys_tcp, e.key, e.key_len))
            weir__cfg_err_at(
                ld, e.line,
                "'%.*s' in [%s] is for HTTP servers; a protocol = \"tcp\" server takes "
                "addr, upstream, access_log, access_log_file, idle_timeout, "
                "upload_rate, download_rate, proxy_protocol, trusted_proxies and "
                "proxy_protocol_timeout",
                (int)e.key_len, e.key, section);
    }
    bool present;
    *up_name = weir__cfg_dup_string(ld, t, "upstream", section, &present);
    weir_toml_entry ue;
    *up_line = weir__cfg_entry_of(t, "upstream", &ue) ? ue.line : s->line;
    if (s->protocol == WEIR_CFG_TLS_PASSTHROUGH) {
        for (size_t i = 0; weir__cfg_keys_termination[i]; i++) {
            weir_toml_entry e;
            if (weir__cfg_entry_of(t, weir__cfg_keys_termination[i], &e))
                weir__cfg_err_at(ld, e.line,
                                 "'%s' in [%s]: a tls_passthrough server does not terminate TLS "
                                 "(its backends do)",
                                 weir__cfg_keys_termination[i], section);
        }
        load_sni_routes(ld, s, t, "sni_routes", section);
        if (!present && !weir__cfg_entry_of(t, "sni_routes", &ue))
            weir__cfg_err_at(ld, s->line,
                             "[%s] (protocol = \"tls_passthrough\") needs 'sni_routes' or "
                             "'upstream' (the default)",
                             section);
    } else if (!present) {
        weir__cfg_err_at(ld, s->line, "[%s] (protocol = \"tcp\") needs 'upstream'", section);
    }
    if (s->protocol == WEIR_CFG_TCP && weir__cfg_entry_of(t, "sni_routes", &ue))
        weir__cfg_err_at(ld, ue.line,
                         "'sni_routes' in [%s] is for protocol = \"tls_passthrough\" servers",
                         section);
    weir_tcp_options *o = &s->tcp;
    weir__cfg_get_duration(ld, t, "idle_timeout", section, 7 * 86400000u, false,
                           &o->idle_timeout_ms);
    weir__cfg_get_duration(ld, t, "proxy_protocol_timeout", section, 3600000, false,
                           &o->handshake_timeout_ms);
    weir__cfg_get_size(ld, t, "upload_rate", section, UINT64_MAX / 2000, &o->upload_rate);
    weir__cfg_get_size(ld, t, "download_rate", section, UINT64_MAX / 2000, &o->download_rate);
}

/* protocol = "udp": only its keys, its upstream (looked up by the
 * caller) and its settings; its addresses take their "udp://" names. */
static void load_udp(loader *ld, weir_cfg_server *s, const weir_toml_value *t, const char *section,
                     char **up_name, int *up_line)
{
    size_t n = weir_toml_table_count(t);
    for (size_t i = 0; i < n; i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        if (listed(weir__cfg_keys_server, e.key, e.key_len) &&
            !listed(weir__cfg_keys_udp, e.key, e.key_len))
            weir__cfg_err_at(ld, e.line,
                             "'%.*s' in [%s] is not for a protocol = \"udp\" server, which takes "
                             "addr, upstream, access_log, access_log_file, idle_timeout, "
                             "responses and max_sessions",
                             (int)e.key_len, e.key, section);
    }
    bool present;
    *up_name = weir__cfg_dup_string(ld, t, "upstream", section, &present);
    weir_toml_entry ue;
    *up_line = weir__cfg_entry_of(t, "upstream", &ue) ? ue.line : s->line;
    if (!present)
        weir__cfg_err_at(ld, s->line, "[%s] (protocol = \"udp\") needs 'upstream'", section);
    weir_udp_options *o = &s->udp;
    weir__cfg_get_duration(ld, t, "idle_timeout", section, 7 * 86400000u, false,
                           &o->idle_timeout_ms);
    int64_t v;
    if (weir__cfg_get_int(ld, t, "responses", section, 0, 1000000, &v))
        o->responses = (uint32_t)v;
    if (weir__cfg_get_int(ld, t, "max_sessions", section, 1, 10000000, &v))
        o->max_sessions = (uint32_t)v;
    for (size_t i = 0; s->addrs && i < s->n_addrs; i++) {
        size_t len = strlen(s->addrs[i]);
        char *a = malloc(len + 7);
        if (!a)
            continue;
        memcpy(a, "udp://", 6);
        memcpy(a + 6, s->addrs[i], len + 1);
        free(s->addrs[i]);
        s->addrs[i] = a;
    }
}

/* protocol = "resp": only its keys, its upstream (looked up and checked
 * by the caller) and its settings. */
static void load_resp(loader *ld, weir_cfg_server *s, const weir_toml_value *t, const char *section,
                      char **up_name, int *up_line)
{
    size_t n = weir_toml_table_count(t);
    for (size_t i = 0; i < n; i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        if (listed(weir__cfg_keys_server, e.key, e.key_len) &&
            !listed(weir__cfg_keys_resp, e.key, e.key_len))
            weir__cfg_err_at(ld, e.line,
                             "'%.*s' in [%s] is not for a protocol = \"resp\" server, which takes "
                             "addr, upstream, idle_timeout and max_command_size",
                             (int)e.key_len, e.key, section);
    }
    bool present;
    *up_name = weir__cfg_dup_string(ld, t, "upstream", section, &present);
    weir_toml_entry ue;
    *up_line = weir__cfg_entry_of(t, "upstream", &ue) ? ue.line : s->line;
    if (!present)
        weir__cfg_err_at(ld, s->line,
                         "[%s] (protocol = \"resp\") needs 'upstream': the ring it answers for",
                         section);
    weir_resp_options *o = &s->resp;
    weir__cfg_get_duration(ld, t, "idle_timeout", section, 7 * 86400000u, false,
                           &o->idle_timeout_ms);
    uint64_t size;
    if (weir__cfg_get_size(ld, t, "max_command_size", section, 512ull * 1024 * 1024, &size)) {
        if (size < 1024)
            weir__cfg_err_at(ld, ue.line, "'max_command_size' in [%s] must be at least 1KB",
                             section);
        o->max_command = (uint32_t)size;
        /* One argument may be as long as the command allows. */
        o->max_bulk = o->max_command < 512 * 1024 ? o->max_command : 512 * 1024;
        o->max_inline = o->max_command < 64 * 1024 ? o->max_command : 64 * 1024;
    }
}

/* trusted_proxies = ["10.0.0.0/8", "::1"]: whose identity headers count. */
static void load_trusted_proxies(loader *ld, weir_proxy_options *o, const weir_toml_value *t,
                                 const char *section)
{
    size_t n = 0;
    int line = 0;
    char **items = weir__cfg_get_string_list(ld, t, "trusted_proxies", section, &n, &line);
    if (!items)
        return;
    if (n > WEIR_MAX_TRUSTED_PROXIES)
        weir__cfg_err_at(ld, line, "'trusted_proxies' in [%s]: at most %d entries", section,
                         WEIR_MAX_TRUSTED_PROXIES);
    for (size_t i = 0; i < n && i < WEIR_MAX_TRUSTED_PROXIES; i++) {
        if (weir_cidr_parse(items[i], &o->trusted_proxies[o->n_trusted_proxies]) != WEIR_OK)
            weir__cfg_err_at(ld, line,
                             "'trusted_proxies' in [%s]: '%s' is not an address or CIDR block "
                             "(\"10.0.0.0/8\", \"2001:db8::/32\", \"127.0.0.1\")",
                             section, items[i]);
        else
            o->n_trusted_proxies++;
    }
    weir__cfg_free_list(items, n);
}

/*
 * Connection aging. In the file 0 turns keepalive_requests and
 * keepalive_time off (nginx's 0); the library's 0 is "the default", so
 * off is WEIR_UNLIMITED there.
 */
static void load_aging(loader *ld, weir_proxy_options *o, const weir_toml_value *t,
                       const char *section)
{
    int64_t v;
    if (weir__cfg_get_int(ld, t, "keepalive_requests", section, 0, 1000000000, &v))
        o->keepalive_requests = v ? (uint32_t)v : WEIR_UNLIMITED;
    uint32_t ms;
    if (weir__cfg_get_duration(ld, t, "keepalive_time", section, 30 * 86400000ull, true, &ms))
        o->keepalive_time_ms = ms ? ms : WEIR_UNLIMITED;
    weir__cfg_get_duration(ld, t, "h2_max_connection_age", section, 30 * 86400000ull, true,
                           &o->h2_max_connection_age_ms);
    weir__cfg_get_duration(ld, t, "h2_max_connection_age_grace", section, 86400000, false,
                           &o->h2_max_connection_age_grace_ms);
}

/* otlp_exporter and server_timing (HTTP servers). */
static void load_tracing(loader *ld, weir_cfg_server *s, const weir_toml_value *t,
                         const char *section)
{
    bool present;
    char *url = weir__cfg_dup_string(ld, t, "otlp_exporter", section, &present);
    if (url) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "otlp_exporter", &e);
        if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
            weir__cfg_err_at(ld, e.line,
                             "'otlp_exporter' in [%s] is the http:// or https:// URL of an "
                             "OTLP/HTTP collector (\"http://HOST:4318\"), not '%s'",
                             section, url);
        else if (!(s->otlp_endpoint = weir__otlp_endpoint(url)))
            weir__cfg_err_at(ld, e.line, "'otlp_exporter' in [%s]: more than 64 collectors",
                             section);
        free(url);
    }
    weir__cfg_get_bool(ld, t, "server_timing", section, &s->server_timing);
    weir_toml_entry e;
    s->prometheus_path = weir__cfg_dup_string(ld, t, "prometheus_metrics", section, &present);
    if (s->prometheus_path && s->prometheus_path[0] != '/') {
        weir__cfg_entry_of(t, "prometheus_metrics", &e);
        weir__cfg_err_at(ld, e.line,
                         "'prometheus_metrics' in [%s] is a path (\"/metrics\"), not '%s'", section,
                         s->prometheus_path);
    }
    size_t n = 0;
    int line = 0;
    char **allow = weir__cfg_get_string_list(ld, t, "prometheus_allow", section, &n, &line);
    if (allow && !s->prometheus_path)
        weir__cfg_err_at(ld, line, "'prometheus_allow' in [%s] needs 'prometheus_metrics'",
                         section);
    static const char *const loopback[] = {"127.0.0.0/8", "::1"};
    const char *const *v = allow ? (const char *const *)allow : loopback;
    size_t nv = allow ? n : 2;
    s->prometheus_allow = s->prometheus_path ? calloc(nv ? nv : 1, sizeof(weir_cidr)) : NULL;
    for (size_t i = 0; s->prometheus_allow && i < nv; i++) {
        if (weir_cidr_parse(v[i], &s->prometheus_allow[s->n_prometheus_allow]) != WEIR_OK)
            weir__cfg_err_at(ld, line,
                             "'prometheus_allow' in [%s]: '%s' is not an address or CIDR block",
                             section, v[i]);
        else
            s->n_prometheus_allow++;
    }
    weir__cfg_free_list(allow, n);
}

void weir__cfg_load_server(loader *ld, weir_cfg_server *s, const weir_toml_value *t,
                           char ***loc_names, size_t *n_loc_names, int *loc_line, char **up_name,
                           int *up_line)
{
    char section[300];
    snprintf(section, sizeof(section), "servers.%s", s->name);
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] must be a table", section);
        return;
    }
    weir__cfg_check_keys(ld, t, section, weir__cfg_keys_server);
    int line = s->line;
    s->addrs = weir__cfg_get_string_list(ld, t, "addr", section, &s->n_addrs, &line);
    if (!s->addrs && !weir__cfg_entry_of(t, "addr", &(weir_toml_entry){0}))
        weir__cfg_err_at(ld, s->line, "[%s] needs 'addr'", section);
    else if (s->addrs && s->n_addrs == 0)
        weir__cfg_err_at(ld, line, "'addr' in [%s] is empty", section);
    for (size_t i = 0; s->addrs && i < s->n_addrs; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (weir_addr_parse(s->addrs[i], &ss, &len) < 0)
            weir__cfg_err_at(ld, line, "invalid listen address '%s' in [%s]: expected \"ip:port\"",
                             s->addrs[i], section);
    }
    bool present;
    char *proto = weir__cfg_dup_string(ld, t, "protocol", section, &present);
    if (proto && strcmp(proto, "tcp") == 0) {
        s->protocol = WEIR_CFG_TCP;
    } else if (proto && strcmp(proto, "udp") == 0) {
        s->protocol = WEIR_CFG_UDP;
    } else if (proto && strcmp(proto, "resp") == 0) {
        s->protocol = WEIR_CFG_RESP;
    } else if (proto && strcmp(proto, "tls_passthrough") == 0) {
        s->protocol = WEIR_CFG_TLS_PASSTHROUGH;
        s->tcp.peek_client_hello = true;
    } else if (proto && strcmp(proto, "http") != 0) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "protocol", &e);
        weir__cfg_err_at(ld, e.line,
                         "'protocol' in [%s] is \"%s\": expected \"http\", \"tcp\", "
                         "\"udp\", \"tls_passthrough\" or \"resp\"",
                         section, proto);
    }
    free(proto);
    if (s->protocol == WEIR_CFG_UDP) {
        load_udp(ld, s, t, section, up_name, up_line);
    } else if (s->protocol == WEIR_CFG_RESP) {
        load_resp(ld, s, t, section, up_name, up_line);
        return;
    } else if (s->protocol != WEIR_CFG_HTTP) {
        load_tcp(ld, s, t, section, up_name, up_line);
    } else {
        for (size_t i = 0; weir__cfg_keys_server_l4_only[i]; i++) {
            const char *k = weir__cfg_keys_server_l4_only[i];
            weir_toml_entry e;
            if (weir__cfg_entry_of(t, k, &e))
                weir__cfg_err_at(
                    ld, e.line, "'%s' in [%s] is for protocol = \"tcp\" or \"udp\" servers; %s", k,
                    section,
                    strcmp(k, "tls") == 0 ? "an HTTP server has TLS when it lists 'certificates'"
                                          : "an HTTP server routes by its locations");
        }
        *loc_line = s->line;
        *loc_names = weir__cfg_get_string_list(ld, t, "locations", section, n_loc_names, loc_line);
        if (!*loc_names && !weir__cfg_entry_of(t, "locations", &(weir_toml_entry){0}))
            weir__cfg_err_at(ld, s->line, "[%s] needs 'locations'", section);
    }
    load_tracing(ld, s, t, section);

    char *log = weir__cfg_dup_string(ld, t, "access_log", section, &present);
    if (log) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "access_log", &e);
        char err[256];
        s->access_log = s->protocol != WEIR_CFG_HTTP
                            ? weir__access_log_compile_tcp(log, err, sizeof(err))
                            : weir__access_log_compile(log, err, sizeof(err));
        if (!s->access_log && strcmp(log, "off") != 0)
            weir__cfg_err_at(ld, e.line, "'access_log' in [%s]: %s", section, err);
        free(log);
    }
    s->access_log_file = weir__cfg_dup_string(ld, t, "access_log_file", section, &present);
    if (s->protocol == WEIR_CFG_UDP)
        return;
    weir_proxy_options *o = &s->opts;
    weir__cfg_get_duration(ld, t, "client_header_timeout", section, 3600000, false,
                           &o->client_header_timeout_ms);
    weir__cfg_get_duration(ld, t, "client_body_timeout", section, 86400000, false,
                           &o->client_body_timeout_ms);
    weir__cfg_get_duration(ld, t, "keepalive_timeout", section, 86400000, false,
                           &o->keepalive_timeout_ms);
    weir__cfg_get_duration(ld, t, "send_timeout", section, 86400000, false, &o->send_timeout_ms);
    weir__cfg_get_duration(ld, t, "tunnel_idle_timeout", section, 7 * 86400000u, false,
                           &o->tunnel_idle_timeout_ms);
    uint64_t size;
    if (weir__cfg_get_size(ld, t, "max_header_size", section, 1024 * 1024, &size)) {
        if (size < 1024)
            weir__cfg_err_at(ld, s->line, "'max_header_size' in [%s] must be at least 1KB",
                             section);
        o->max_header_bytes = (uint32_t)size;
    }
    if (weir__cfg_get_size(ld, t, "max_uri_size", section, 1024 * 1024, &size)) {
        if (size < 256)
            weir__cfg_err_at(ld, s->line, "'max_uri_size' in [%s] must be at least 256", section);
        o->max_uri_bytes = (uint32_t)size;
    }
    bool merge = true;
    if (weir__cfg_get_bool(ld, t, "merge_slashes", section, &merge))
        o->keep_slashes = !merge;
    weir__cfg_get_bool(ld, t, "underscores_in_headers", section, &o->underscores_in_headers);
    load_trusted_proxies(ld, o, t, section);
    weir_toml_entry pe;
    if (weir__cfg_get_bool(ld, t, "proxy_protocol", section, &o->proxy_protocol) &&
        o->proxy_protocol && !o->n_trusted_proxies && weir__cfg_entry_of(t, "proxy_protocol", &pe))
        weir__cfg_err_at(ld, pe.line,
                         "'proxy_protocol' in [%s] needs 'trusted_proxies': the addresses of the "
                         "balancers that send the header (from anyone else it would let a client "
                         "choose its own address)",
                         section);
    if (s->protocol != WEIR_CFG_HTTP) {
        s->tcp.proxy_protocol = o->proxy_protocol;
        memcpy(s->tcp.trusted_proxies, o->trusted_proxies, sizeof(o->trusted_proxies));
        s->tcp.n_trusted_proxies = o->n_trusted_proxies;
        weir__cfg_get_duration(ld, t, "tls_handshake_timeout", section, 3600000, false,
                               &s->tcp.tls_handshake_timeout_ms);
        weir__cfg_load_server_tls(ld, s, t, section);
        bool want = false;
        weir_toml_entry te;
        if (weir__cfg_get_bool(ld, t, "tls", section, &want) && weir__cfg_entry_of(t, "tls", &te) &&
            want != (s->tls.n_certs > 0 || weir__cfg_entry_of(t, "certificates", &pe)))
            weir__cfg_err_at(ld, te.line,
                             want ? "'tls = true' in [%s] needs 'certificates' (as an HTTPS "
                                    "server's)"
                                  : "'tls = false' in [%s] with 'certificates': remove one",
                             section);
        return;
    }
    int64_t v;
    if (weir__cfg_get_int(ld, t, "max_headers", section, 1, 1000, &v))
        o->max_headers = (uint32_t)v;
    if (weir__cfg_get_size(ld, t, "max_body_size", section, UINT64_MAX / 2, &size))
        o->max_body_bytes = size;
    weir__cfg_get_duration(ld, t, "tls_handshake_timeout", section, 3600000, false,
                           &o->tls_handshake_timeout_ms);
    load_aging(ld, o, t, section);
    weir__cfg_load_server_tls(ld, s, t, section);
    weir_toml_entry te;
    if (weir__cfg_entry_of(t, "tls_passthrough", &te)) {
        if (s->tls.n_certs == 0 && !weir__cfg_entry_of(t, "certificates", &pe))
            weir__cfg_err_at(ld, te.line,
                             "'tls_passthrough' in [%s] needs 'certificates': the names it does "
                             "not pass through are terminated here",
                             section);
        load_sni_routes(ld, s, t, "tls_passthrough", section);
        /* The connections it passes are logged as TCP sessions. */
        char err[256];
        if (s->access_log && !(s->tcp_access_log = weir__access_log_compile_tcp(
                                   "{client_ip} [{when}] {protocol} {status} {bytes_sent} "
                                   "{bytes_received} {session_time} \"{upstream_addr}\" "
                                   "{termination} passthrough={sni}",
                                   err, sizeof(err))))
            weir__cfg_err_at(ld, te.line, "out of memory");
    }
}
