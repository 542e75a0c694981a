/*
 * config.c - loading and validating the TOML configuration (see config.h).
 *
 * Loading walks the document once per section, checks every key against
 * the section's schema (unknown keys get a "did you mean" from the closest
 * known key), converts values with range checks, and then resolves the
 * cross-references (server -> locations -> upstream). Every problem is
 * recorded and loading goes on, so one run reports all of them.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "app/config/config.h"
#include "app/etcd/split.h"
#include "app/webhook.h"

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
#include <time.h>
#include <unistd.h>

#include "app/access_log.h"
#include "app/config/read.h"
#include "app/plugin/plugin.h"
#include "app/toml/toml.h"
#include "app/vars.h"
#include "weir/addr.h"

bool weir__config_resolve_names = true;
weir_lb_target *(*weir__config_discovered)(const char *name, const char *spec, size_t *n);

/* Each section's text, hashed: what a reload's diff compares. */
static void hash_sections(weir_config *c, const char *text, size_t len)
{
    weir_cfg_section *v = NULL;
    size_t n = 0;
    int el;
    char err[200];
    if (weir__cfg_split(text, len, false, &v, &n, &el, err, sizeof(err)) != 0)
        return;
    c->section_hashes = calloc(n ? n : 1, sizeof(*c->section_hashes));
    for (size_t i = 0; c->section_hashes && i < n; i++) {
        char *key = NULL;
        if (v[i].name ? asprintf(&key, "%s.%s", v[i].section, v[i].name) < 0
                      : asprintf(&key, "%s", v[i].section) < 0)
            break;
        c->section_hashes[c->n_section_hashes++] =
            (struct weir_cfg_section_hash){key, weir_lb_hash(v[i].body, v[i].body_len)};
    }
    weir__cfg_sections_free(v, n);
}

/* ---- [basic] ---- */

const weir_cfg_key weir__cfg_keys_basic[] = {
    {"threads", WEIR_CT_INTEGER, NULL},
    {"pid_file", WEIR_CT_STRING, NULL},
    {"error_log", WEIR_CT_STRING, NULL},
    {"log_level", WEIR_CT_STRING, "error|warn|info|debug"},
    {"grace_period", WEIR_CT_DURATION, NULL},
    {"upgrade_sock", WEIR_CT_STRING, NULL},
    {"temp_dir", WEIR_CT_STRING, NULL},
    {"config_cache", WEIR_CT_STRING, NULL},
    {"etcd_cacert", WEIR_CT_STRING, NULL},
    {"etcd_cert", WEIR_CT_STRING, NULL},
    {"etcd_key", WEIR_CT_STRING, NULL},
    {"instance_id", WEIR_CT_STRING, NULL},
    {"instance_ttl", WEIR_CT_DURATION, NULL},
    {"webhook", WEIR_CT_STRING, NULL},
    {"webhook_type", WEIR_CT_STRING, "normal|slack|wecom|dingtalk"},
    {"webhook_notifications", WEIR_CT_STRINGS, NULL},
    {"otlp_service_name", WEIR_CT_STRING, NULL},
    {"otlp_headers", WEIR_CT_STRINGS, NULL},
    {"otlp_sampler", WEIR_CT_STRING, NULL},
    {"otlp_batch_size", WEIR_CT_INTEGER, NULL},
    {"otlp_flush_interval", WEIR_CT_DURATION, NULL},
    {"otlp_protocol", WEIR_CT_STRING, "http/protobuf|http/json"},
    {"prometheus_push", WEIR_CT_STRING, NULL},
    {"prometheus_push_interval", WEIR_CT_DURATION, NULL},
    {NULL, 0, NULL}};

static void load_webhook(loader *ld, weir_cfg_basic *b, const weir_toml_value *t)
{
    bool present;
    weir_toml_entry e;
    b->webhook = weir__cfg_dup_string(ld, t, "webhook", "basic", &present);
    if (b->webhook && strncmp(b->webhook, "http://", 7) != 0 &&
        strncmp(b->webhook, "https://", 8) != 0) {
        weir__cfg_entry_of(t, "webhook", &e);
        weir__cfg_err_at(ld, e.line, "'webhook' in [basic] is an http:// or https:// URL");
    }
    char *type = weir__cfg_dup_string(ld, t, "webhook_type", "basic", &present);
    if (type && (b->webhook_type = weir__webhook_type(type)) < 0) {
        weir__cfg_entry_of(t, "webhook_type", &e);
        weir__cfg_err_at(ld, e.line,
                         "'webhook_type' in [basic] is \"normal\", \"slack\", \"wecom\" or "
                         "\"dingtalk\", not '%s'",
                         type);
    }
    free(type);
    if (b->webhook_type < 0)
        b->webhook_type = 0;
    size_t n = 0;
    int line = 0;
    char **kinds = weir__cfg_get_string_list(ld, t, "webhook_notifications", "basic", &n, &line);
    for (size_t i = 0; i < n; i++) {
        int k = weir__event_by_name(kinds[i]);
        if (k < 0)
            weir__cfg_err_at(ld, line,
                             "'webhook_notifications' in [basic]: unknown event '%s' (%s)",
                             kinds[i], weir__event_names());
        else
            b->webhook_events |= 1u << k;
    }
    weir__cfg_free_list(kinds, n);
}

/* The exporter's settings (app/otel/export.h); servers choose the
 * collector with otlp_exporter. */
static void load_otlp(loader *ld, weir_cfg_basic *b, const weir_toml_value *t)
{
    bool present;
    weir_toml_entry e;
    b->otlp_service_name = weir__cfg_dup_string(ld, t, "otlp_service_name", "basic", &present);
    char *sampler = weir__cfg_dup_string(ld, t, "otlp_sampler", "basic", &present);
    if (sampler && weir__sampler_parse(sampler, &b->otlp_sampler) != 0) {
        weir__cfg_entry_of(t, "otlp_sampler", &e);
        weir__cfg_err_at(ld, e.line,
                         "'otlp_sampler' in [basic] is \"always_on\", \"always_off\", "
                         "\"ratio:R\" (R from 0 to 1), or one of them after \"parentbased_\", "
                         "not '%s'",
                         sampler);
    }
    free(sampler);
    char *proto = weir__cfg_dup_string(ld, t, "otlp_protocol", "basic", &present);
    if (proto && strcmp(proto, "http/json") != 0 && strcmp(proto, "http/protobuf") != 0) {
        weir__cfg_entry_of(t, "otlp_protocol", &e);
        weir__cfg_err_at(ld, e.line,
                         "'otlp_protocol' in [basic] is \"http/protobuf\" or \"http/json\", "
                         "not '%s'",
                         proto);
    }
    b->otlp_json = proto && strcmp(proto, "http/json") == 0;
    free(proto);
    int64_t v;
    if (weir__cfg_get_int(ld, t, "otlp_batch_size", "basic", 1, 8192, &v))
        b->otlp_batch_size = (uint32_t)v;
    weir__cfg_get_duration(ld, t, "otlp_flush_interval", "basic", 3600000, false,
                           &b->otlp_flush_interval_ms);
    int line = 0;
    b->otlp_headers =
        weir__cfg_get_string_list(ld, t, "otlp_headers", "basic", &b->n_otlp_headers, &line);
    for (size_t i = 0; i < b->n_otlp_headers; i++) {
        const char *h = b->otlp_headers[i], *colon = strchr(h, ':');
        char name[128];
        size_t nl = colon ? (size_t)(colon - h) : 0;
        if (nl && nl < sizeof(name)) {
            memcpy(name, h, nl);
            name[nl] = '\0';
        }
        if (!nl || nl >= sizeof(name) || !weir__cfg_valid_token(name) || strpbrk(h, "\r\n"))
            weir__cfg_err_at(ld, line,
                             "'otlp_headers' in [basic]: '%s' is not \"Name: value\" (a field "
                             "name, a colon, a value on one line)",
                             h);
    }
}

static void load_basic(loader *ld, const weir_toml_value *t)
{
    weir_cfg_basic *b = &ld->cfg->basic;
    b->grace_period_ms = 10000;
    b->instance_ttl_ms = 10000;
    b->otlp_sampler = (weir_sampler){.kind = WEIR_SAMPLER_ALWAYS_ON, .parent_based = true};
    if (!t)
        goto temp_dir;
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[basic] must be a table");
        return;
    }
    weir__cfg_check_keys(ld, t, "basic", weir__cfg_keys_basic);
    int64_t v;
    bool present;
    if (weir__cfg_get_int(ld, t, "threads", "basic", 0, 1024, &v))
        b->threads = (int)v;
    b->pid_file = weir__cfg_dup_string(ld, t, "pid_file", "basic", &present);
    b->error_log = weir__cfg_dup_string(ld, t, "error_log", "basic", &present);
    b->upgrade_sock = weir__cfg_dup_string(ld, t, "upgrade_sock", "basic", &present);
    b->log_level = weir__cfg_dup_string(ld, t, "log_level", "basic", &present);
    if (b->log_level && strcmp(b->log_level, "error") && strcmp(b->log_level, "warn") &&
        strcmp(b->log_level, "info") && strcmp(b->log_level, "debug")) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "log_level", &e);
        weir__cfg_err_at(ld, e.line,
                         "'log_level' in [basic] must be error, warn, info or debug, not '%s'",
                         b->log_level);
    }
    weir__cfg_get_duration(ld, t, "grace_period", "basic", 3600000, false, &b->grace_period_ms);
    b->config_cache = weir__cfg_dup_string(ld, t, "config_cache", "basic", &present);
    b->etcd_cacert = weir__cfg_dup_string(ld, t, "etcd_cacert", "basic", &present);
    b->etcd_cert = weir__cfg_dup_string(ld, t, "etcd_cert", "basic", &present);
    b->etcd_key = weir__cfg_dup_string(ld, t, "etcd_key", "basic", &present);
    b->instance_id = weir__cfg_dup_string(ld, t, "instance_id", "basic", &present);
    weir__cfg_get_duration(ld, t, "instance_ttl", "basic", 3600000, false, &b->instance_ttl_ms);
    if (b->instance_ttl_ms < 2000) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "instance_ttl", &e);
        weir__cfg_err_at(ld, e.line, "'instance_ttl' in [basic] must be at least 2s");
    }
    load_webhook(ld, b, t);
    load_otlp(ld, b, t);
    b->prometheus_push = weir__cfg_dup_string(ld, t, "prometheus_push", "basic", &present);
    if (b->prometheus_push && strncmp(b->prometheus_push, "http://", 7) != 0 &&
        strncmp(b->prometheus_push, "https://", 8) != 0) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "prometheus_push", &e);
        weir__cfg_err_at(ld, e.line,
                         "'prometheus_push' in [basic] is the http:// or https:// URL of a "
                         "Pushgateway, not '%s'",
                         b->prometheus_push);
    }
    weir__cfg_get_duration(ld, t, "prometheus_push_interval", "basic", 86400000, false,
                           &b->prometheus_push_interval_ms);
    if (b->prometheus_push_interval_ms && b->prometheus_push_interval_ms < 1000) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "prometheus_push_interval", &e);
        weir__cfg_err_at(ld, e.line, "'prometheus_push_interval' in [basic] is at least \"1s\"");
    }
    b->temp_dir = weir__cfg_dup_string(ld, t, "temp_dir", "basic", &present);
    if (b->temp_dir) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "temp_dir", &e);
        ld->temp_dir_line = e.line;
    }
temp_dir:
    if (!b->temp_dir)
        b->temp_dir = strdup("/tmp");
}

/* A location spills bodies to files in temp_dir: it must take them. */
void weir__cfg_check_temp_dir(loader *ld, int line)
{
    if (ld->temp_dir_checked)
        return;
    ld->temp_dir_checked = true;
    const char *dir = ld->cfg->basic.temp_dir;
    int fd = dir ? open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) : -1;
    if (fd >= 0) {
        close(fd);
        return;
    }
    weir__cfg_err_at(ld, ld->temp_dir_line ? ld->temp_dir_line : line,
                     "temp_dir '%s' (for request_buffer_file_size) cannot hold temporary files: %s",
                     dir ? dir : "", dir ? strerror(errno) : "out of memory");
}

/* ---- [admin] ---- */

const weir_cfg_key weir__cfg_keys_admin[] = {{"addr", WEIR_CT_STRING, NULL},
                                             {"token", WEIR_CT_STRING, NULL},
                                             {"token_file", WEIR_CT_STRING, NULL},
                                             {"persist", WEIR_CT_BOOLEAN, NULL},
                                             {"history", WEIR_CT_INTEGER, NULL},
                                             {"history_dir", WEIR_CT_STRING, NULL},
                                             {NULL, 0, NULL}};

/* 127.0.0.0/8 or ::1 (also as ::ffff:127.x.y.z). */
static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *a = (const void *)ss;
    if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
        return true;
    return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
}

/* The token file's content without its trailing newline; NULL (error
 * reported) if it cannot be read or is empty. */
static char *read_token_file(loader *ld, const char *path, int line)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        weir__cfg_err_at(ld, line, "[admin] token_file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[4097];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    if (n == sizeof(buf)) {
        weir__cfg_err_at(ld, line, "[admin] token_file %s is larger than 4096 bytes", path);
        return NULL;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    if (n == 0 || strlen(buf) != n) {
        weir__cfg_err_at(ld, line, "[admin] token_file %s is empty or contains a NUL character",
                         path);
        return NULL;
    }
    return strdup(buf);
}

static void load_admin(loader *ld, const weir_toml_value *t)
{
    weir_cfg_admin *a = &ld->cfg->admin;
    if (!t)
        return;
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[admin] must be a table");
        return;
    }
    weir__cfg_check_keys(ld, t, "admin", weir__cfg_keys_admin);
    bool present;
    weir_toml_entry e;
    a->line = weir_toml_line(t);
    a->addr = weir__cfg_dup_string(ld, t, "addr", "admin", &present);
    if (present && weir__cfg_entry_of(t, "addr", &e))
        a->line = e.line;
    if (!present)
        weir__cfg_err_at(ld, a->line, "[admin] needs 'addr'");
    a->token = weir__cfg_dup_string(ld, t, "token", "admin", &present);
    if (a->token && !a->token[0]) {
        weir__cfg_entry_of(t, "token", &e);
        weir__cfg_err_at(ld, e.line, "'token' in [admin] is empty");
    }
    bool has_token = present;
    a->token_file = weir__cfg_dup_string(ld, t, "token_file", "admin", &present);
    if (present && has_token) {
        weir__cfg_entry_of(t, "token_file", &e);
        weir__cfg_err_at(ld, e.line, "[admin] takes 'token' or 'token_file', not both");
    } else if (a->token_file) {
        weir__cfg_entry_of(t, "token_file", &e);
        a->token = read_token_file(ld, a->token_file, e.line);
    }
    weir__cfg_get_bool(ld, t, "persist", "admin", &a->persist);
    int64_t keep = 20;
    weir__cfg_get_int(ld, t, "history", "admin", 0, 1000, &keep);
    a->history = (uint32_t)keep;
    a->history_dir = weir__cfg_dup_string(ld, t, "history_dir", "admin", &present);
    struct sockaddr_storage ss;
    socklen_t len;
    if (!a->addr)
        return;
    if (weir_addr_parse(a->addr, &ss, &len) < 0)
        weir__cfg_err_at(ld, a->line,
                         "invalid listen address '%s' in [admin]: expected \"ip:port\"", a->addr);
    else if (!is_loopback(&ss) && !has_token && !a->token_file)
        weir__cfg_err_at(ld, a->line, "[admin] listens on %s (not loopback) without a token",
                         a->addr);
}

/* ---- the document ---- */

static const weir_cfg_key top_keys[] = {{"basic", WEIR_CT_TABLE, NULL},
                                        {"admin", WEIR_CT_TABLE, NULL},
                                        {"servers", WEIR_CT_TABLE, NULL},
                                        {"locations", WEIR_CT_TABLE, NULL},
                                        {"upstreams", WEIR_CT_TABLE, NULL},
                                        {"certificates", WEIR_CT_TABLE, NULL},
                                        {"plugins", WEIR_CT_TABLE, NULL},
                                        {"caches", WEIR_CT_TABLE, NULL},
                                        {NULL, 0, NULL}};

const weir_cfg_section_schema weir__cfg_schema[] = {
    {"basic", NULL, weir__cfg_keys_basic, NULL},
    {"admin", NULL, weir__cfg_keys_admin, NULL},
    {"servers", "http", weir__cfg_keys_server, weir__cfg_keys_server_l4_only},
    {"servers", "tcp", weir__cfg_keys_tcp, NULL},
    {"servers", "tls_passthrough", weir__cfg_keys_tcp, weir__cfg_keys_termination},
    {"servers", "udp", weir__cfg_keys_udp, NULL},
    {"servers", "resp", weir__cfg_keys_resp, NULL},
    {"locations", NULL, weir__cfg_keys_location, NULL},
    {"upstreams", NULL, weir__cfg_keys_upstream, NULL},
    {"certificates", NULL, weir__cfg_keys_cert, NULL},
    {"caches", NULL, weir__cfg_keys_cache, NULL},
    {NULL, NULL, NULL, NULL}};

const char *weir__cfg_type_name(weir_cfg_type t)
{
    static const char *const names[] = {
        [WEIR_CT_STRING] = "string",   [WEIR_CT_STRINGS] = "strings",
        [WEIR_CT_INTEGER] = "integer", [WEIR_CT_INTEGERS] = "integers",
        [WEIR_CT_BOOLEAN] = "boolean", [WEIR_CT_DURATION] = "duration",
        [WEIR_CT_SIZE] = "size",       [WEIR_CT_TABLE] = "table",
        [WEIR_CT_ARRAY] = "array",
    };
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "string";
}

/* The named sub-tables of a section like [servers], checked to be tables. */
static const weir_toml_value *section_of(loader *ld, const weir_toml_value *root, const char *name)
{
    const weir_toml_value *t = weir_toml_table_get(root, name);
    if (t && weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "'%s' must be a table of [%s.NAME] sections", name,
                         name);
        return NULL;
    }
    return t;
}

static weir_cfg_upstream *find_upstream(weir_config *c, const char *name);

/* A TCP session has no request: only an address to hash. */
static void check_tcp_upstream(loader *ld, const weir_cfg_server *s, const weir_cfg_upstream *u,
                               int line)
{
    if (!u)
        return;
    if (s->protocol == WEIR_CFG_RESP) {
        /* A ring: any hash key, for GET's key takes the request's place. */
        if (u->algo != WEIR_LB_KETAMA && u->algo != WEIR_LB_MAGLEV)
            weir__cfg_err_at(ld, line,
                             "[servers.%s] (protocol = \"resp\") answers for upstream '%s', whose "
                             "algo is \"%s\": a ring needs algo = \"hash:KEY\" or "
                             "\"maglev:KEY\" (the KEY the proxies that share it hash by)",
                             s->name, u->name, weir_lb_algo_name(u->algo));
        return;
    }
    if (u->hash_key != WEIR_HASH_NONE && u->hash_key != WEIR_HASH_IP)
        weir__cfg_err_at(ld, line,
                         "[servers.%s] passes connections to upstream '%s', which hashes a "
                         "request's %s: a TCP connection has only its client address (use "
                         "algo = \"hash:ip\", or another upstream)",
                         s->name, u->name,
                         u->hash_key == WEIR_HASH_URI    ? "uri"
                         : u->hash_key == WEIR_HASH_PATH ? "path"
                                                         : "header, cookie or query");
    if (u->sticky_cookie)
        weir__cfg_err_at(ld, line,
                         "[servers.%s] passes connections to upstream '%s', which has a "
                         "sticky_cookie: a TCP connection has no cookies (use "
                         "algo = \"hash:ip\" for stickiness)",
                         s->name, u->name);
    if (s->protocol == WEIR_CFG_UDP && u->tls)
        weir__cfg_err_at(ld, line,
                         "[servers.%s] sends datagrams to upstream '%s', which has tls = true: "
                         "weir speaks no DTLS",
                         s->name, u->name);
    if (s->protocol == WEIR_CFG_UDP &&
        (u->hc.kind == WEIR_HEALTH_HTTP || u->hc.kind == WEIR_HEALTH_GRPC))
        weir__cfg_err_at(ld, line,
                         "[servers.%s] sends datagrams to upstream '%s', whose health_check "
                         "speaks HTTP: a UDP backend takes \"dns://NAME\", \"udp://\" or "
                         "\"tcp://\" (its TCP port)",
                         s->name, u->name);
    if (s->protocol == WEIR_CFG_UDP && u->max_conns)
        weir__cfg_err_at(ld, line,
                         "[servers.%s] sends datagrams to upstream '%s', which has max_conns: "
                         "UDP sessions are not capped per backend (max_sessions on the server "
                         "caps them all)",
                         s->name, u->name);
    if (s->protocol == WEIR_CFG_UDP && u->send_proxy)
        weir__cfg_err_at(ld, line,
                         "[servers.%s] sends datagrams to upstream '%s', which has "
                         "send_proxy_protocol: a datagram has no connection to name",
                         s->name, u->name);
}

/* The upstream `name` that [section] refers to; NULL (an error, with a
 * suggestion) if there is none. */
static weir_cfg_upstream *upstream_ref(loader *ld, weir_config *c, const char *name, int line,
                                       const char *section)
{
    weir_cfg_upstream *u = find_upstream(c, name);
    if (u)
        return u;
    const char *known[64] = {0};
    for (size_t k = 0; k < c->n_upstreams && k < 63; k++)
        known[k] = c->upstreams[k].name;
    const char *s = weir__cfg_suggest(name, known);
    weir__cfg_err_at(ld, line, "[%s] refers to undefined upstream '%s'%s%s%s", section, name,
                     s ? "; did you mean '" : "", s ? s : "", s ? "'?" : "");
    return NULL;
}

static weir_cfg_upstream *find_upstream(weir_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_upstreams; i++) {
        if (strcmp(c->upstreams[i].name, name) == 0)
            return &c->upstreams[i];
    }
    return NULL;
}

static weir_cfg_location *find_location(weir_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_locations; i++) {
        if (strcmp(c->locations[i].name, name) == 0)
            return &c->locations[i];
    }
    return NULL;
}

/* Two listen addresses conflict if equal, or on the same port and family
 * with one of them the wildcard address (0.0.0.0 or ::). */
static bool addrs_overlap(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (weir_addr_equal((const struct sockaddr *)a, (const struct sockaddr *)b))
        return true;
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port &&
               (x->sin_addr.s_addr == htonl(INADDR_ANY) || y->sin_addr.s_addr == htonl(INADDR_ANY));
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           (IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
}

/* A server's address without the "udp://" of a UDP server's. */
static const char *listen_ip_port(const char *addr)
{
    return strncmp(addr, "udp://", 6) == 0 ? addr + 6 : addr;
}

static void build_router(loader *ld, weir_cfg_server *s)
{
    weir_route_spec *specs = calloc(s->n_locations ? s->n_locations : 1, sizeof(*specs));
    if (!specs)
        return;
    for (size_t i = 0; s->locations && i < s->n_locations; i++) {
        weir_cfg_location *l = s->locations[i];
        if (!l)
            continue;
        specs[i] = (weir_route_spec){.hosts = (const char *const *)l->hosts,
                                     .n_hosts = l->n_hosts,
                                     .path = l->path,
                                     .has_weight = l->has_weight,
                                     .weight = l->weight,
                                     .data = l};
    }
    char err[512];
    s->router = weir__router_new(specs, s->n_locations, err, sizeof(err));
    if (!s->router) {
        /* "location N: ..." -> name the location and its line. */
        size_t idx = 0;
        const char *msg = err;
        if (sscanf(err, "location %zu:", &idx) == 1 && idx < s->n_locations && s->locations &&
            s->locations[idx]) {
            msg = strchr(err, ':') + 2;
            weir__cfg_err_at(ld, s->locations[idx]->line, "[locations.%s]: %s",
                             s->locations[idx]->name, msg);
        } else {
            weir__cfg_err_at(ld, s->line, "[servers.%s]: %s", s->name, msg);
        }
    }
    free(specs);
}

static void free_config(weir_config *c)
{
    for (size_t i = 0; i < c->n_servers; i++) {
        weir_cfg_server *s = &c->servers[i];
        free(s->name);
        weir__cfg_free_list(s->addrs, s->n_addrs);
        free(s->locations);
        weir__router_free(s->router);
        weir__access_log_free(s->access_log);
        weir__access_log_free(s->tcp_access_log);
        for (size_t k = 0; k < s->n_sni_routes; k++) {
            free(s->sni_routes[k].name);
            free(s->sni_routes[k].upstream_name);
        }
        free(s->sni_routes);
        free(s->access_log_file);
        free(s->prometheus_path);
        free(s->prometheus_allow);
        free(s->tls.certs);
        free(s->tls.ciphers);
        free(s->tls.ciphersuites);
        free(s->tls.alpn);
        free(s->tls.client_ca);
        weir__plugin_free(s->redirect);
    }
    free(c->servers);
    for (size_t i = 0; i < c->n_certs; i++) {
        weir_cfg_cert *x = &c->certs[i];
        free(x->name);
        free(x->cert);
        free(x->key);
        free(x->chain);
        weir__cfg_free_list(x->domains, x->n_domains);
        free(x->acme);
        free(x->email);
        free(x->storage);
        free(x->acme_ca);
        free(x->dns_hook);
        free(x->acme_cert);
        free(x->acme_key);
        free(x->placeholder_cert);
        free(x->placeholder_key);
    }
    free(c->certs);
    for (size_t i = 0; i < c->n_locations; i++) {
        weir_cfg_location *l = &c->locations[i];
        free(l->name);
        weir__cfg_free_list(l->hosts, l->n_hosts);
        free(l->path);
        pcre2_code_free(l->rewrite_re);
        free(l->rewrite_repl);
        free(l->rewrite_text);
        weir__cfg_free_headers(&l->proxy_set);
        weir__cfg_free_headers(&l->proxy_add);
        weir__cfg_free_headers(&l->proxy_remove);
        weir__cfg_free_headers(&l->resp_set);
        weir__cfg_free_headers(&l->resp_add);
        weir__cfg_free_headers(&l->resp_remove);
        weir__cfg_free_location_chains(l);
        weir_resp_client_free(l->router);
        free(l->router_text);
        weir__tmpl_free(l->router_key);
        free(l->router_key_text);
    }
    free(c->locations);
    for (size_t i = 0; i < c->n_upstreams; i++) {
        weir_cfg_upstream *u = &c->upstreams[i];
        free(u->name);
        for (size_t j = 0; j < u->n_backends; j++)
            free(u->backends[j].text);
        free(u->backends);
        free(u->hash_name);
        free(u->sticky_cookie);
        free(u->sni);
        free(u->discovery_spec);
        for (size_t j = 0; j < u->dns.n_names; j++)
            free((char *)u->dns.names[j].host);
        free((void *)u->dns.names);
        free((char *)u->dns.servers);
        for (size_t j = 0; j < u->dns.n_search; j++)
            free((char *)u->dns.search[j]);
        free((void *)u->dns.search);
        weir_tls_client_free(u->tls_client);
        weir_upstream_free(u->lb);
    }
    free(c->upstreams);
    weir__cfg_free_plugins(c);
    weir__cfg_free_caches(c);
    free(c->basic.pid_file);
    free(c->basic.error_log);
    free(c->basic.log_level);
    free(c->basic.upgrade_sock);
    free(c->basic.temp_dir);
    free(c->basic.config_cache);
    free(c->basic.etcd_cacert);
    free(c->basic.etcd_cert);
    free(c->basic.etcd_key);
    free(c->basic.instance_id);
    free(c->basic.webhook);
    free(c->basic.otlp_service_name);
    weir__cfg_free_list(c->basic.otlp_headers, c->basic.n_otlp_headers);
    free(c->basic.prometheus_push);
    for (size_t i = 0; i < c->n_section_hashes; i++)
        free(c->section_hashes[i].key);
    free(c->section_hashes);
    free(c->admin.addr);
    if (c->admin.token) /* a secret: do not leave it in freed memory */
        explicit_bzero(c->admin.token, strlen(c->admin.token));
    free(c->admin.token);
    free(c->admin.token_file);
    free(c->admin.history_dir);
    free(c->file);
    free(c);
}

/* Allocates the named sections of `section` into an array of `size`-byte
 * structs whose first two fields are `char *name; int line;`. */
static void *alloc_named(loader *ld, const weir_toml_value *sec, size_t size, size_t *n_out)
{
    size_t n = weir_toml_table_count(sec);
    *n_out = 0;
    char *arr = calloc(n ? n : 1, size);
    if (!arr)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        weir_toml_entry e;
        weir_toml_table_entry(sec, i, &e);
        struct {
            char *name;
            int line;
        } *head = (void *)(arr + i * size);
        head->name = strdup(e.key);
        head->line = e.line;
    }
    *n_out = n;
    return arr;
}

weir_config *weir__config_load(const char *text, size_t len, const char *file,
                               weir_cfg_errors *errs)
{
    loader ld = {.file = file, .errs = errs};
    size_t errs_before = errs->n;
    weir_toml_error terr;
    weir_toml_value *root = weir_toml_parse(text, len, &terr);
    if (!root) {
        char buf[512];
        weir_toml_error_format(&terr, file, buf, sizeof(buf));
        weir__cfg_errors_add(errs, "%s", buf);
        return NULL;
    }
    weir_config *c = calloc(1, sizeof(*c));
    if (!c) {
        weir_toml_free(root);
        return NULL;
    }
    ld.cfg = c;
    c->refs = 1;
    c->file = strdup(file);
    c->revision = 1;
    c->loaded_unix = (int64_t)time(NULL);
    c->digest = weir_lb_hash(text, len);
    weir__cfg_check_keys(&ld, root, "top level", top_keys);
    load_basic(&ld, section_of(&ld, root, "basic"));
    load_admin(&ld, weir_toml_table_get(root, "admin"));

    const weir_toml_value *certs = section_of(&ld, root, "certificates");
    if (certs) {
        c->certs = alloc_named(&ld, certs, sizeof(weir_cfg_cert), &c->n_certs);
        for (size_t i = 0; i < c->n_certs; i++) {
            weir_toml_entry e;
            weir_toml_table_entry(certs, i, &e);
            weir__cfg_load_cert_section(&ld, &c->certs[i], e.value);
        }
        weir__cfg_check_unlisted_certs(&ld, weir_toml_table_get(root, "servers"));
    }
    const weir_toml_value *caches = section_of(&ld, root, "caches");
    if (caches)
        weir__cfg_load_caches(&ld, caches);
    const weir_toml_value *plugins = section_of(&ld, root, "plugins");
    if (plugins)
        weir__cfg_load_plugins(&ld, plugins);
    const weir_toml_value *ups = section_of(&ld, root, "upstreams");
    const weir_toml_value *locs = section_of(&ld, root, "locations");
    const weir_toml_value *srvs = section_of(&ld, root, "servers");

    if (ups) {
        c->upstreams = alloc_named(&ld, ups, sizeof(weir_cfg_upstream), &c->n_upstreams);
        for (size_t i = 0; i < c->n_upstreams; i++) {
            weir_toml_entry e;
            weir_toml_table_entry(ups, i, &e);
            weir__cfg_load_upstream(&ld, &c->upstreams[i], e.value);
        }
    }
    if (locs) {
        c->locations = alloc_named(&ld, locs, sizeof(weir_cfg_location), &c->n_locations);
        for (size_t i = 0; i < c->n_locations; i++) {
            weir_toml_entry e;
            weir_toml_table_entry(locs, i, &e);
            char *up_name = NULL;
            int up_line = 0;
            weir__cfg_load_location(&ld, &c->locations[i], e.value, &up_name, &up_line);
            if (up_name) {
                char section[300];
                snprintf(section, sizeof(section), "locations.%s", c->locations[i].name);
                c->locations[i].upstream = upstream_ref(&ld, c, up_name, up_line, section);
                free(up_name);
            }
        }
    }
    for (size_t i = 0; i < c->n_plugins; i++) {
        weir_plugin *p = c->plugins[i];
        if (p->def && p->def->link && p->conf) {
            char section[300];
            snprintf(section, sizeof(section), "plugins.%s", p->name);
            p->def->link(&ld, p->conf, section);
        }
    }
    if (!srvs || weir_toml_table_count(srvs) == 0)
        weir__cfg_err_at(&ld, 0, "no [servers.NAME] section: nothing to listen on");
    if (srvs) {
        c->servers = alloc_named(&ld, srvs, sizeof(weir_cfg_server), &c->n_servers);
        for (size_t i = 0; i < c->n_servers; i++) {
            weir_cfg_server *s = &c->servers[i];
            weir_toml_entry e;
            weir_toml_table_entry(srvs, i, &e);
            char **names = NULL;
            size_t n_names = 0;
            int names_line = s->line, up_line = s->line;
            char *up_name = NULL;
            weir__cfg_load_server(&ld, s, e.value, &names, &n_names, &names_line, &up_name,
                                  &up_line);
            char section[300];
            snprintf(section, sizeof(section), "servers.%s", s->name);
            if (up_name) {
                s->upstream = upstream_ref(&ld, c, up_name, up_line, section);
                check_tcp_upstream(&ld, s, s->upstream, up_line);
                free(up_name);
            }
            for (size_t k = 0; k < s->n_sni_routes; k++) {
                weir_cfg_sni_route *r = &s->sni_routes[k];
                r->upstream = upstream_ref(&ld, c, r->upstream_name, r->line, section);
                check_tcp_upstream(&ld, s, r->upstream, r->line);
            }
            s->locations = calloc(n_names ? n_names : 1, sizeof(*s->locations));
            for (size_t k = 0; s->locations && k < n_names; k++) {
                weir_cfg_location *l = find_location(c, names[k]);
                if (!l) {
                    const char *known[64] = {0};
                    for (size_t j = 0; j < c->n_locations && j < 63; j++)
                        known[j] = c->locations[j].name;
                    const char *sg = weir__cfg_suggest(names[k], known);
                    weir__cfg_err_at(&ld, names_line,
                                     "[servers.%s] refers to undefined location '%s'%s%s%s",
                                     s->name, names[k], sg ? "; did you mean '" : "", sg ? sg : "",
                                     sg ? "'?" : "");
                    continue;
                }
                s->locations[s->n_locations++] = l;
            }
            weir__cfg_free_list(names, n_names);
        }
        /* Listen addresses are unique across all servers (a UDP
         * server's only among UDP servers). */
        for (size_t i = 0; i < c->n_servers; i++) {
            bool udp = c->servers[i].protocol == WEIR_CFG_UDP;
            for (size_t a = 0; a < c->servers[i].n_addrs; a++) {
                struct sockaddr_storage x, y;
                socklen_t xl, yl;
                if (weir_addr_parse(listen_ip_port(c->servers[i].addrs[a]), &x, &xl) < 0)
                    continue;
                for (size_t j = 0; j <= i; j++) {
                    if ((c->servers[j].protocol == WEIR_CFG_UDP) != udp)
                        continue;
                    for (size_t b = 0; b < (j == i ? a : c->servers[j].n_addrs); b++) {
                        if (weir_addr_parse(listen_ip_port(c->servers[j].addrs[b]), &y, &yl) == 0 &&
                            addrs_overlap(&x, &y))
                            weir__cfg_err_at(&ld, c->servers[i].line,
                                             "listen address %s of [servers.%s] is also used by "
                                             "[servers.%s]",
                                             c->servers[i].addrs[a], c->servers[i].name,
                                             c->servers[j].name);
                    }
                }
            }
        }
        /* ... and the admin API's address is none of them. */
        struct sockaddr_storage adm, y;
        socklen_t al, yl;
        if (c->admin.addr && weir_addr_parse(c->admin.addr, &adm, &al) == 0) {
            for (size_t i = 0; i < c->n_servers; i++) {
                for (size_t b = 0; b < c->servers[i].n_addrs; b++) {
                    if (weir_addr_parse(c->servers[i].addrs[b], &y, &yl) == 0 &&
                        addrs_overlap(&adm, &y))
                        weir__cfg_err_at(&ld, c->admin.line,
                                         "[admin] address %s is also used by [servers.%s]",
                                         c->admin.addr, c->servers[i].name);
                }
            }
        }
        if (errs->n == errs_before) {
            for (size_t i = 0; i < c->n_servers; i++)
                build_router(&ld, &c->servers[i]);
        }
    }
    weir_toml_free(root);
    if (errs->n != errs_before) {
        free_config(c);
        return NULL;
    }
    hash_sections(c, text, len);
    return c;
}

weir_config *weir__config_load_file(const char *path, weir_cfg_errors *errs)
{
    FILE *f = fopen(path, "rb");
    loader ld = {.file = path, .errs = errs};
    if (!f) {
        weir__cfg_err_at(&ld, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > (64u << 20)) {
                weir__cfg_err_at(&ld, 0, "file larger than 64 MiB");
                fclose(f);
                free(buf);
                return NULL;
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                fclose(f);
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        if (got == 0)
            break;
        len += got;
    }
    bool read_err = ferror(f);
    fclose(f);
    if (read_err) {
        weir__cfg_err_at(&ld, 0, "read error");
        free(buf);
        return NULL;
    }
    weir_config *c = weir__config_load(buf ? buf : "", len, path, errs);
    free(buf);
    return c;
}

weir_config *weir__config_ref(weir_config *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void weir__config_unref(weir_config *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        free_config(c);
}

static const uint64_t *hash_of(const weir_config *c, const char *key)
{
    for (size_t i = 0; i < c->n_section_hashes; i++) {
        if (strcmp(c->section_hashes[i].key, key) == 0)
            return &c->section_hashes[i].hash;
    }
    return NULL;
}

bool weir__config_diff(const weir_config *old, const weir_config *cfg,
                       void (*fn)(void *arg, const char *change, const char *section), void *arg)
{
    if (!old->n_section_hashes || !cfg->n_section_hashes)
        return false;
    static const char *const changes[] = {"added", "changed", "removed"};
    for (int pass = 0; pass < 3; pass++) {
        const weir_config *a = pass == 2 ? old : cfg, *b = pass == 2 ? cfg : old;
        for (size_t i = 0; i < a->n_section_hashes; i++) {
            const uint64_t *h = hash_of(b, a->section_hashes[i].key);
            if (pass == 1 ? h && *h != a->section_hashes[i].hash : !h)
                fn(arg, changes[pass], a->section_hashes[i].key);
        }
    }
    return true;
}
