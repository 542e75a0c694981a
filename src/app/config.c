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
#include "app/config.h"

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
#include "app/config_int.h"
#include "app/toml.h"
#include "net/sock.h"

bool weir__config_resolve_names = true;

/* ---- [basic] ---- */

static const char *const basic_keys[] = {"threads",      "pid_file",     "error_log", "log_level",
                                         "grace_period", "upgrade_sock", "temp_dir",  NULL};

static void load_basic(loader *ld, const weir_toml_value *t)
{
    weir_cfg_basic *b = &ld->cfg->basic;
    b->grace_period_ms = 10000;
    if (!t)
        goto temp_dir;
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[basic] must be a table");
        return;
    }
    weir__cfg_check_keys(ld, t, "basic", basic_keys);
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
static void check_temp_dir(loader *ld, int line)
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

static const char *const admin_keys[] = {"addr", "token", "token_file", "persist", NULL};

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
    weir__cfg_check_keys(ld, t, "admin", admin_keys);
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
    struct sockaddr_storage ss;
    socklen_t len;
    if (!a->addr)
        return;
    if (weir__addr_parse(a->addr, &ss, &len) < 0)
        weir__cfg_err_at(ld, a->line,
                         "invalid listen address '%s' in [admin]: expected \"ip:port\"", a->addr);
    else if (!is_loopback(&ss) && !has_token && !a->token_file)
        weir__cfg_err_at(ld, a->line, "[admin] listens on %s (not loopback) without a token",
                         a->addr);
}

/* ---- [upstreams.NAME] ---- */

static bool valid_token(const char *s);
static void load_health_check(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                              const char *section);

static const char *const upstream_keys[] = {"addrs",
                                            "algo",
                                            "connection_timeout",
                                            "total_connection_timeout",
                                            "read_timeout",
                                            "write_timeout",
                                            "idle_timeout",
                                            "keepalive",
                                            "max_retries",
                                            "retry_on",
                                            "retry_timeout",
                                            "max_conns",
                                            "queue_timeout",
                                            "max_fails",
                                            "fail_timeout",
                                            "sticky_cookie",
                                            "health_check",
                                            "health_check_interval",
                                            "health_check_timeout",
                                            "health_check_rise",
                                            "health_check_fall",
                                            "health_check_status",
                                            "health_check_body",
                                            "tls",
                                            "sni",
                                            "verify_cert",
                                            "ca_file",
                                            "client_cert",
                                            "alpn",
                                            NULL};

/* retry_on = ["connect", "reset", "timeout", "502", "503", "504",
 * "non_idempotent"]: which failures send a request to another backend
 * (nginx's proxy_next_upstream, HAProxy's retry-on). */
static void load_retry_on(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                          const char *section)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } kinds[] = {{"connect", WEIR_CFG_RETRY_CONNECT},
                 {"reset", WEIR_CFG_RETRY_RESET},
                 {"timeout", WEIR_CFG_RETRY_TIMEOUT},
                 {"502", WEIR_CFG_RETRY_502},
                 {"503", WEIR_CFG_RETRY_503},
                 {"504", WEIR_CFG_RETRY_504},
                 {"non_idempotent", WEIR_CFG_RETRY_NON_IDEMPOTENT}};
    u->retry_on = WEIR_CFG_RETRY_CONNECT | WEIR_CFG_RETRY_RESET | WEIR_CFG_RETRY_TIMEOUT;
    size_t n = 0;
    int line = 0;
    char **items = weir__cfg_get_string_list(ld, t, "retry_on", section, &n, &line);
    if (!items)
        return;
    u->retry_on = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < sizeof(kinds) / sizeof(kinds[0]) && strcmp(items[i], kinds[k].name) != 0)
            k++;
        if (k == sizeof(kinds) / sizeof(kinds[0]))
            weir__cfg_err_at(ld, line,
                             "'retry_on' in [%s]: unknown '%s' (connect, reset, timeout, 502, 503, "
                             "504 or non_idempotent)",
                             section, items[i]);
        else
            u->retry_on |= kinds[k].bit;
    }
    weir__cfg_free_list(items, n);
}

/* "round_robin", "random", "least_conn", "p2c", "hash:KEY" (Ketama) or
 * "maglev:KEY", KEY one of ip, uri, path, header:NAME, cookie:NAME,
 * query:NAME. Returns NULL or what is wrong. */
static const char *parse_algo(weir_cfg_upstream *u, const char *s)
{
    static const char usage[] =
        "expected round_robin, random, least_conn, p2c, hash:KEY or maglev:KEY";
    const char *colon = strchr(s, ':');
    if (!colon) {
        if (weir_lb_algo_parse(s, &u->algo) < 0 || u->algo == WEIR_LB_KETAMA ||
            u->algo == WEIR_LB_MAGLEV)
            return usage;
        return NULL;
    }
    size_t alen = (size_t)(colon - s);
    if (alen == 4 && strncmp(s, "hash", 4) == 0)
        u->algo = WEIR_LB_KETAMA;
    else if (alen == 6 && strncmp(s, "maglev", 6) == 0)
        u->algo = WEIR_LB_MAGLEV;
    else
        return usage;
    const char *key = colon + 1;
    static const struct {
        const char *name;
        weir_hash_key key;
        bool named;
    } keys[] = {{"ip", WEIR_HASH_IP, false},        {"uri", WEIR_HASH_URI, false},
                {"path", WEIR_HASH_PATH, false},    {"header", WEIR_HASH_HEADER, true},
                {"cookie", WEIR_HASH_COOKIE, true}, {"query", WEIR_HASH_QUERY, true}};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        size_t kl = strlen(keys[i].name);
        if (strncmp(key, keys[i].name, kl) != 0)
            continue;
        if (!keys[i].named && key[kl] == '\0') {
            u->hash_key = keys[i].key;
            return NULL;
        }
        if (keys[i].named && key[kl] == ':' && key[kl + 1]) {
            u->hash_key = keys[i].key;
            u->hash_name = strdup(key + kl + 1);
            return NULL;
        }
    }
    return "the hash key must be ip, uri, path, header:NAME, cookie:NAME or query:NAME";
}

/* The library upstream for u: its members, breaker and health check. */
static void build_lb(loader *ld, weir_cfg_upstream *u, const char *section, uint32_t max_fails,
                     uint32_t fail_timeout_ms)
{
    weir_upstream_options o = {.algo = u->algo,
                               .max_fails = max_fails,
                               .fail_timeout_ms = fail_timeout_ms,
                               .max_conns = u->max_conns,
                               .keep_sole_backend = true};
    u->lb = weir_upstream_new(u->name, &o);
    if (!u->lb) {
        weir__cfg_err_at(ld, u->line, "[%s]: out of memory", section);
        return;
    }
    for (size_t i = 0; i < u->n_backends; i++) {
        char addr[64];
        weir_peer_addr_str(&u->backends[i].peer, addr, sizeof(addr));
        if (i >= WEIR_UPSTREAM_MAX_BACKENDS) {
            weir__cfg_err_at(ld, u->line, "[%s] has more than %d backends", section,
                             WEIR_UPSTREAM_MAX_BACKENDS);
            break;
        }
        if (weir_upstream_add(u->lb, addr, u->backends[i].weight) == WEIR_ERR_INVAL)
            weir__cfg_err_at(ld, u->line, "[%s] lists backend %s twice", section, addr);
    }
    if (u->hc.kind != WEIR_HEALTH_NONE && weir_upstream_set_health_check(u->lb, &u->hc) < 0)
        weir__cfg_err_at(ld, u->line, "[%s]: invalid health check", section);
}

/* Parses "host:port [weight]" and appends one backend per resolved address. */
static void add_backend(loader *ld, weir_cfg_upstream *u, const char *text, int line,
                        const char *section)
{
    char buf[512];
    if (strlen(text) >= sizeof(buf)) {
        weir__cfg_err_at(ld, line, "address too long in [%s]", section);
        return;
    }
    strcpy(buf, text);
    char *save = NULL;
    char *addr = strtok_r(buf, " \t", &save);
    char *weight_s = strtok_r(NULL, " \t", &save);
    char *extra = strtok_r(NULL, " \t", &save);
    long weight = 1;
    if (!addr || extra) {
        weir__cfg_err_at(
            ld, line,
            "invalid address '%s' in [%s]: expected \"host:port\" or \"host:port weight\"", text,
            section);
        return;
    }
    if (weight_s) {
        char *end;
        errno = 0;
        weight = strtol(weight_s, &end, 10);
        if (*end || errno || weight < 1 || weight > 10000) {
            weir__cfg_err_at(ld, line, "invalid weight '%s' in [%s]: expected 1..10000", weight_s,
                             section);
            return;
        }
    }
    struct sockaddr_storage ss;
    socklen_t len;
    struct addrinfo *res = NULL;
    size_t n_addrs = 0;
    if (weir__addr_parse(addr, &ss, &len) == 0) {
        n_addrs = 1;
    } else {
        /* host:port with a name: resolve now, at load time. */
        char *colon = strrchr(addr, ':');
        if (!colon || colon == addr || !colon[1] || addr[0] == '[') {
            weir__cfg_err_at(ld, line, "invalid address '%s' in [%s]: expected \"host:port\"", addr,
                             section);
            return;
        }
        *colon = '\0';
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 1 || port > 65535) {
            weir__cfg_err_at(ld, line, "invalid port in '%s:%s' in [%s]", addr, colon + 1, section);
            return;
        }
        if (!weir__config_resolve_names) {
            weir__cfg_err_at(ld, line, "cannot resolve '%s' in [%s]: name resolution is off", addr,
                             section);
            return;
        }
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        int rc = getaddrinfo(addr, colon + 1, &hints, &res);
        if (rc != 0) {
            weir__cfg_err_at(ld, line, "cannot resolve '%s' in [%s]: %s", addr, section,
                             gai_strerror(rc));
            return;
        }
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
            n_addrs++;
    }
    weir_cfg_backend *nb = realloc(u->backends, (u->n_backends + n_addrs + 1) * sizeof(*nb));
    if (!nb) {
        freeaddrinfo(res);
        return;
    }
    u->backends = nb;
    if (!res) {
        weir_cfg_backend *b = &u->backends[u->n_backends++];
        memset(b, 0, sizeof(*b));
        b->text = strdup(text);
        memcpy(&b->peer.addr, &ss, sizeof(ss));
        b->peer.addr_len = len;
        b->weight = (uint32_t)weight;
        return;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        weir_cfg_backend *b = &u->backends[u->n_backends++];
        memset(b, 0, sizeof(*b));
        b->text = strdup(text);
        memcpy(&b->peer.addr, ai->ai_addr, ai->ai_addrlen);
        b->peer.addr_len = ai->ai_addrlen;
        b->weight = (uint32_t)weight;
        /* A backend named by hostname is that name for TLS (SNI and the
         * certificate check) unless the upstream sets 'sni'. */
        snprintf(b->peer.sni, sizeof(b->peer.sni), "%s", addr);
    }
    freeaddrinfo(res);
}

/* tls, sni, verify_cert, ca_file, client_cert, alpn: the TLS client the
 * upstream's connections use. */
static void load_upstream_tls(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                              const char *section)
{
    weir__cfg_get_bool(ld, t, "tls", section, &u->tls);
    bool present, verify = true;
    u->sni = weir__cfg_dup_string(ld, t, "sni", section, &present);
    weir__cfg_get_bool(ld, t, "verify_cert", section, &verify);
    char *ca = weir__cfg_dup_string(ld, t, "ca_file", section, &present);
    char *client = weir__cfg_dup_string(ld, t, "client_cert", section, &present);
    char *alpn = weir__cfg_dup_string(ld, t, "alpn", section, &present);
    weir_toml_entry e;
    int line = u->line;
    static const char *const tls_only[] = {"sni", "verify_cert", "ca_file", "client_cert"};
    for (size_t i = 0; !u->tls && i < sizeof(tls_only) / sizeof(tls_only[0]); i++) {
        if (weir__cfg_entry_of(t, tls_only[i], &e))
            weir__cfg_err_at(ld, e.line, "'%s' in [%s] needs 'tls = true'", tls_only[i], section);
    }
    if (u->sni && strlen(u->sni) >= sizeof(((weir_peer *)0)->sni)) {
        weir__cfg_entry_of(t, "sni", &e);
        weir__cfg_err_at(ld, e.line, "'sni' in [%s] is too long", section);
    }
    const char *protos = "http/1.1";
    if (alpn) {
        weir__cfg_entry_of(t, "alpn", &e);
        line = e.line;
        if (strcmp(alpn, "h2") == 0) {
            u->h2 = true;
            protos = "h2";
        } else if (strcmp(alpn, "h2,h1") == 0) {
            u->h2_or_h1 = true;
            protos = "h2,http/1.1";
            if (!u->tls)
                weir__cfg_err_at(ld, line,
                                 "'alpn' in [%s] is \"h2,h1\": choosing by ALPN needs 'tls = true' "
                                 "(without TLS use \"h2\" for h2c or \"h1\")",
                                 section);
        } else if (strcmp(alpn, "h1") != 0) {
            weir__cfg_err_at(ld, line,
                             "'alpn' in [%s] is '%s': expected \"h1\", \"h2\" or \"h2,h1\"",
                             section, alpn);
        }
    }
    const weir_cfg_cert *cc = NULL;
    if (client) {
        weir__cfg_entry_of(t, "client_cert", &e);
        cc = weir__cfg_find_cert(ld, client, e.line, section);
    }
    if (u->tls && ld->errs->n == 0) {
        weir_tls_client_spec spec = {.no_verify = !verify,
                                     .ca_file = ca,
                                     .cert_file = cc ? cc->cert : NULL,
                                     .key_file = cc ? cc->key : NULL,
                                     .chain_file = cc ? cc->chain : NULL,
                                     .alpn = protos};
        char err[512];
        u->tls_client = weir_tls_client_new(&spec, err, sizeof(err));
        if (!u->tls_client) {
            if (ca && weir__cfg_entry_of(t, "ca_file", &e))
                line = e.line;
            weir__cfg_err_at(ld, line, "[%s]: TLS: %s", section, err);
        } else if (u->hc.kind == WEIR_HEALTH_HTTP || u->hc.kind == WEIR_HEALTH_GRPC) {
            /* Active checks go the way requests do: over TLS. */
            u->hc.tls = true;
            u->hc.tls_client = u->tls_client;
            if (u->sni)
                snprintf(u->hc.sni, sizeof(u->hc.sni), "%s", u->sni);
            if (u->lb && weir_upstream_set_health_check(u->lb, &u->hc) < 0)
                weir__cfg_err_at(ld, u->line, "[%s]: invalid health check", section);
        }
    }
    free(ca);
    free(client);
    free(alpn);
}

static void load_upstream(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t)
{
    char section[300];
    snprintf(section, sizeof(section), "upstreams.%s", u->name);
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] must be a table", section);
        return;
    }
    weir__cfg_check_keys(ld, t, section, upstream_keys);
    size_t n = 0;
    int line = u->line;
    char **addrs = weir__cfg_get_string_list(ld, t, "addrs", section, &n, &line);
    if (!addrs && !weir__cfg_entry_of(t, "addrs", &(weir_toml_entry){0}))
        weir__cfg_err_at(ld, u->line, "[%s] needs 'addrs'", section);
    /* An empty list is valid: the upstream answers 503 until backends are
     * added at runtime. */
    for (size_t i = 0; addrs && i < n; i++)
        add_backend(ld, u, addrs[i], line, section);
    weir__cfg_free_list(addrs, n);

    bool present;
    char *algo = weir__cfg_dup_string(ld, t, "algo", section, &present);
    u->algo = WEIR_LB_ROUND_ROBIN;
    if (algo) {
        const char *why = parse_algo(u, algo);
        if (why) {
            weir_toml_entry e;
            weir__cfg_entry_of(t, "algo", &e);
            weir__cfg_err_at(ld, e.line, "invalid algo '%s' in [%s]: %s", algo, section, why);
        }
    }
    free(algo);
    u->sticky_cookie = weir__cfg_dup_string(ld, t, "sticky_cookie", section, &present);
    if (u->sticky_cookie && !valid_token(u->sticky_cookie)) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "sticky_cookie", &e);
        weir__cfg_err_at(ld, e.line, "'sticky_cookie' in [%s] must be a cookie name", section);
    }
    int64_t iv;
    u->max_retries = 2;
    if (weir__cfg_get_int(ld, t, "max_retries", section, 0, 100, &iv))
        u->max_retries = (uint32_t)iv;
    load_retry_on(ld, u, t, section);
    if (weir__cfg_get_int(ld, t, "max_conns", section, 0, 1000000, &iv))
        u->max_conns = (uint32_t)iv;
    u->queue_timeout_ms = 30000;
    weir__cfg_get_duration(ld, t, "queue_timeout", section, 3600000, false, &u->queue_timeout_ms);
    weir__cfg_get_duration(ld, t, "retry_timeout", section, 3600000, false, &u->retry_timeout_ms);
    uint32_t max_fails = 3, fail_timeout_ms = 10000;
    if (weir__cfg_get_int(ld, t, "max_fails", section, 0, 1000, &iv))
        max_fails = (uint32_t)iv;
    weir__cfg_get_duration(ld, t, "fail_timeout", section, 3600000, false, &fail_timeout_ms);
    load_health_check(ld, u, t, section);
    build_lb(ld, u, section, max_fails, fail_timeout_ms);
    weir__cfg_get_duration(ld, t, "connection_timeout", section, 3600000, false,
                           &u->connection_timeout_ms);
    weir__cfg_get_duration(ld, t, "total_connection_timeout", section, 3600000, false,
                           &u->total_connection_timeout_ms);
    weir__cfg_get_duration(ld, t, "read_timeout", section, 86400000, false, &u->read_timeout_ms);
    weir__cfg_get_duration(ld, t, "write_timeout", section, 86400000, false, &u->write_timeout_ms);
    weir__cfg_get_duration(ld, t, "idle_timeout", section, 86400000, true, &u->idle_timeout_ms);
    int64_t v;
    u->keepalive = 256;
    if (weir__cfg_get_int(ld, t, "keepalive", section, 0, 100000, &v))
        u->keepalive = (uint32_t)v;
    load_upstream_tls(ld, u, t, section);
}

/* health_check = "tcp://", "http://HOST/PATH" ("http:///PATH" sends the
 * backend's address as Host) or "grpc://[SERVICE]" (grpc.health.v1 over
 * h2c), with the health_check_* keys. */
static void load_health_check(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                              const char *section)
{
    weir_health_check *hc = &u->hc;
    bool present;
    char *url = weir__cfg_dup_string(ld, t, "health_check", section, &present);
    weir_toml_entry e;
    int line = weir__cfg_entry_of(t, "health_check", &e) ? e.line : u->line;
    if (url) {
        if (strcmp(url, "tcp") == 0 || strcmp(url, "tcp://") == 0) {
            hc->kind = WEIR_HEALTH_TCP;
        } else if (strncmp(url, "grpc://", 7) == 0) {
            const char *svc = url + 7;
            bool ok = strlen(svc) <= 200;
            for (const char *q = svc; ok && *q; q++)
                ok = (unsigned char)*q > 0x20 && *q != 0x7f && *q != '/';
            if (!ok)
                weir__cfg_err_at(ld, line,
                                 "'health_check' in [%s]: \"grpc://SERVICE\" takes a service name "
                                 "(200 characters at most, no spaces or '/')",
                                 section);
            else {
                hc->kind = WEIR_HEALTH_GRPC;
                snprintf(hc->path, sizeof(hc->path), "%s", svc);
            }
        } else if (strncmp(url, "http://", 7) == 0) {
            const char *host = url + 7, *slash = strchr(host, '/');
            if (!slash || strlen(slash) >= sizeof(hc->path) ||
                (size_t)(slash - host) >= sizeof(hc->host)) {
                weir__cfg_err_at(ld, line,
                                 "'health_check' in [%s] must be \"tcp://\", "
                                 "\"http://HOST/PATH\" or \"grpc://[SERVICE]\"",
                                 section);
            } else {
                hc->kind = WEIR_HEALTH_HTTP;
                memcpy(hc->host, host, (size_t)(slash - host));
                hc->host[slash - host] = '\0';
                snprintf(hc->path, sizeof(hc->path), "%s", slash);
                for (const char *p = url; *p; p++) {
                    if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
                        weir__cfg_err_at(ld, line,
                                         "'health_check' in [%s] contains a space or control "
                                         "character",
                                         section);
                        hc->kind = WEIR_HEALTH_NONE;
                        break;
                    }
                }
            }
        } else {
            weir__cfg_err_at(ld, line,
                             "'health_check' in [%s] must be \"tcp://\", \"http://HOST/PATH\" or "
                             "\"grpc://[SERVICE]\"",
                             section);
        }
        free(url);
    }
    weir__cfg_get_duration(ld, t, "health_check_interval", section, 3600000, false,
                           &hc->interval_ms);
    weir__cfg_get_duration(ld, t, "health_check_timeout", section, 600000, false, &hc->timeout_ms);
    int64_t v;
    if (weir__cfg_get_int(ld, t, "health_check_rise", section, 1, 100, &v))
        hc->rise = (uint32_t)v;
    if (weir__cfg_get_int(ld, t, "health_check_fall", section, 1, 100, &v))
        hc->fall = (uint32_t)v;
    if (weir__cfg_entry_of(t, "health_check_status", &e)) {
        size_t n = weir_toml_array_count(e.value);
        if (weir_toml_type_of(e.value) != WEIR_TOML_ARRAY || n == 0 || n > 16) {
            weir__cfg_err_at(ld, e.line,
                             "'health_check_status' in [%s] must be a list of 1 to 16 statuses",
                             section);
        } else {
            for (size_t i = 0; i < n; i++) {
                int64_t st;
                if (!weir_toml_int(weir_toml_array_at(e.value, i), &st) || st < 100 || st > 999) {
                    weir__cfg_err_at(ld, e.line,
                                     "'health_check_status' in [%s]: statuses are 100..999",
                                     section);
                    break;
                }
                hc->expect_status[hc->n_expect_status++] = (int)st;
            }
        }
    }
    char *body = weir__cfg_dup_string(ld, t, "health_check_body", section, &present);
    if (body) {
        if (strlen(body) >= sizeof(hc->expect_body))
            weir__cfg_err_at(ld, line, "'health_check_body' in [%s] is too long", section);
        else
            snprintf(hc->expect_body, sizeof(hc->expect_body), "%s", body);
        free(body);
    }
    if (hc->kind == WEIR_HEALTH_NONE && (hc->interval_ms || hc->timeout_ms || hc->rise ||
                                         hc->fall || hc->n_expect_status || hc->expect_body[0]))
        weir__cfg_err_at(ld, line, "health_check_* settings in [%s] need 'health_check'", section);
}

/* ---- [locations.NAME] ---- */

static const char *const location_keys[] = {"host",
                                            "path",
                                            "weight",
                                            "upstream",
                                            "rewrite",
                                            "proxy_set_headers",
                                            "proxy_add_headers",
                                            "proxy_remove_headers",
                                            "response_set_headers",
                                            "response_add_headers",
                                            "response_remove_headers",
                                            "client_max_body_size",
                                            "connection_timeout",
                                            "read_timeout",
                                            "write_timeout",
                                            "echo",
                                            "grpc_idle_timeout",
                                            "request_buffering",
                                            "request_buffer_size",
                                            "request_buffer_file_size",
                                            NULL};

static bool valid_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

/*
 * Fields a header rule may not touch: the codecs write framing and
 * connection fields themselves, so a rule setting Content-Length would
 * make the peer wait for a body that never comes, and one removing
 * Connection would do nothing. Host may be set (a backend's virtual
 * host), never added or removed.
 */
static const char *forbidden_field(const char *name, bool is_set_on_request)
{
    static const char *const never[] = {"content-length", "transfer-encoding", "connection",
                                        "keep-alive",     "proxy-connection",  "te",
                                        "trailer",        "upgrade",           NULL};
    for (size_t i = 0; never[i]; i++) {
        if (strcasecmp(name, never[i]) == 0)
            return "a framing or hop-by-hop field, which weir writes itself";
    }
    if (strcasecmp(name, "host") == 0 && !is_set_on_request)
        return "Host (only proxy_set_headers may change it)";
    return NULL;
}

/* "Name: value" strings (set/add) or "Name" strings (remove). */
static void load_headers(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                         bool with_value, weir_cfg_headers *out)
{
    size_t n = 0;
    int line = 0;
    char **items = weir__cfg_get_string_list(ld, t, key, section, &n, &line);
    if (!items)
        return;
    out->v = calloc(n ? n : 1, sizeof(*out->v));
    for (size_t i = 0; out->v && i < n; i++) {
        char *s = items[i];
        char *colon = with_value ? strchr(s, ':') : NULL;
        if (with_value && !colon) {
            weir__cfg_err_at(ld, line, "'%s' in [%s]: '%s' must be \"Name: value\"", key, section,
                             s);
            continue;
        }
        if (colon)
            *colon = '\0';
        const char *value = colon ? colon + 1 : NULL;
        while (value && (*value == ' ' || *value == '\t'))
            value++;
        if (!valid_token(s)) {
            weir__cfg_err_at(ld, line, "'%s' in [%s]: invalid header name '%s'", key, section, s);
            continue;
        }
        const char *why = forbidden_field(s, strcmp(key, "proxy_set_headers") == 0);
        if (why) {
            weir__cfg_err_at(ld, line, "'%s' in [%s]: '%s' cannot be changed by a header rule: %s",
                             key, section, s, why);
            continue;
        }
        bool bad_value = false;
        for (const char *p = value; p && *p; p++) {
            if ((unsigned char)*p < 0x20 && *p != '\t')
                bad_value = true;
        }
        if (bad_value) {
            weir__cfg_err_at(ld, line, "'%s' in [%s]: control character in the value of '%s'", key,
                             section, s);
            continue;
        }
        out->v[out->n].name = strdup(s);
        out->v[out->n].value = value ? strdup(value) : NULL;
        out->n++;
    }
    weir__cfg_free_list(items, n);
}

static void free_headers(weir_cfg_headers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->v[i].name);
        free(h->v[i].value);
    }
    free(h->v);
}

static void load_location(loader *ld, weir_cfg_location *l, const weir_toml_value *t,
                          char **upstream_name, int *upstream_line)
{
    char section[300];
    snprintf(section, sizeof(section), "locations.%s", l->name);
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] must be a table", section);
        return;
    }
    weir__cfg_check_keys(ld, t, section, location_keys);
    int line = 0;
    l->hosts = weir__cfg_get_string_list(ld, t, "host", section, &l->n_hosts, &line);
    bool present;
    l->path = weir__cfg_dup_string(ld, t, "path", section, &present);
    if (!l->path)
        l->path = strdup("");
    int64_t v;
    if (weir__cfg_get_int(ld, t, "weight", section, 0, 1000000000, &v)) {
        l->has_weight = true;
        l->weight = v;
    }
    /* Check the path and host rules now, so their errors are reported with
     * every other one (the server's router is built only from a valid
     * configuration). */
    weir_toml_entry pe;
    int path_line = weir__cfg_entry_of(t, "path", &pe) ? pe.line : l->line;
    if (l->path[0] && l->path[0] != '/' && l->path[0] != '=' && l->path[0] != '~') {
        weir__cfg_err_at(
            ld, path_line,
            "'path' in [%s] must be \"/prefix\", \"=/exact\", \"~regex\" or empty, not '%s'",
            section, l->path);
    } else {
        weir_route_spec spec = {
            .hosts = (const char *const *)l->hosts, .n_hosts = l->n_hosts, .path = l->path};
        char rerr[512];
        weir_router *r = weir__router_new(&spec, 1, rerr, sizeof(rerr));
        if (!r)
            weir__cfg_err_at(ld, strstr(rerr, "host") && line ? line : path_line, "[%s]: %s",
                             section, strncmp(rerr, "location 0: ", 12) == 0 ? rerr + 12 : rerr);
        weir__router_free(r);
    }
    *upstream_name = weir__cfg_dup_string(ld, t, "upstream", section, &present);
    weir_toml_entry e;
    *upstream_line = weir__cfg_entry_of(t, "upstream", &e) ? e.line : l->line;
    weir__cfg_get_bool(ld, t, "echo", section, &l->echo);
    if (!*upstream_name && !l->echo)
        weir__cfg_err_at(ld, l->line, "[%s] needs 'upstream' (or echo = true)", section);
    if (*upstream_name && l->echo)
        weir__cfg_err_at(ld, *upstream_line, "[%s] has both 'upstream' and echo = true", section);

    char *rewrite = weir__cfg_dup_string(ld, t, "rewrite", section, &present);
    if (rewrite) {
        l->rewrite_text = strdup(rewrite); /* before the split below */
        weir__cfg_entry_of(t, "rewrite", &e);
        /* "REGEX REPLACEMENT": the regex ends at the first unescaped space. */
        char *sp = strpbrk(rewrite, " \t");
        if (!sp) {
            weir__cfg_err_at(ld, e.line, "'rewrite' in [%s] must be \"REGEX REPLACEMENT\"",
                             section);
        } else {
            *sp = '\0';
            char *repl = sp + 1;
            while (*repl == ' ' || *repl == '\t')
                repl++;
            int code;
            PCRE2_SIZE off;
            l->rewrite_re =
                pcre2_compile((PCRE2_SPTR)rewrite, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
            if (!l->rewrite_re) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(code, msg, sizeof(msg));
                weir__cfg_err_at(ld, e.line, "invalid regex in 'rewrite' of [%s]: %s at offset %zu",
                                 section, (const char *)msg, (size_t)off);
            } else {
                pcre2_jit_compile(l->rewrite_re, PCRE2_JIT_COMPLETE);
                l->rewrite_repl = strdup(repl);
            }
        }
        free(rewrite);
    }
    load_headers(ld, t, "proxy_set_headers", section, true, &l->proxy_set);
    load_headers(ld, t, "proxy_add_headers", section, true, &l->proxy_add);
    load_headers(ld, t, "proxy_remove_headers", section, false, &l->proxy_remove);
    load_headers(ld, t, "response_set_headers", section, true, &l->resp_set);
    load_headers(ld, t, "response_add_headers", section, true, &l->resp_add);
    load_headers(ld, t, "response_remove_headers", section, false, &l->resp_remove);
    uint64_t size;
    if (weir__cfg_get_size(ld, t, "client_max_body_size", section, UINT64_MAX / 2, &size)) {
        l->client_max_body_size = size;
        l->has_max_body = true;
    }
    weir__cfg_get_duration(ld, t, "connection_timeout", section, 3600000, false,
                           &l->connect_timeout_ms);
    weir__cfg_get_duration(ld, t, "read_timeout", section, 86400000, false, &l->read_timeout_ms);
    weir__cfg_get_duration(ld, t, "write_timeout", section, 86400000, false, &l->write_timeout_ms);
    weir__cfg_get_duration(ld, t, "grpc_idle_timeout", section, 7 * 86400000u, false,
                           &l->grpc_idle_timeout_ms);
    bool buffering = true;
    weir__cfg_get_bool(ld, t, "request_buffering", section, &buffering);
    l->request_buffer_bytes = 64 * 1024;
    uint64_t buffer_size;
    if (weir__cfg_get_size(ld, t, "request_buffer_size", section, 1024 * 1024 * 1024, &buffer_size))
        l->request_buffer_bytes = buffer_size;
    uint64_t file_size;
    if (weir__cfg_get_size(ld, t, "request_buffer_file_size", section, UINT64_C(1) << 40,
                           &file_size)) {
        weir_toml_entry fe;
        weir__cfg_entry_of(t, "request_buffer_file_size", &fe);
        if (file_size && file_size <= l->request_buffer_bytes)
            weir__cfg_err_at(ld, fe.line,
                             "'request_buffer_file_size' in [%s] must be larger than "
                             "request_buffer_size (%" PRIu64 " bytes), or 0",
                             section, l->request_buffer_bytes);
        else if (file_size && buffering)
            check_temp_dir(ld, fe.line);
        l->request_buffer_file_bytes = file_size;
    }
    if (!buffering)
        l->request_buffer_bytes = l->request_buffer_file_bytes = 0;
}

/* ---- [servers.NAME] ---- */

static const char *const server_keys[] = {"addr",
                                          "locations",
                                          "access_log",
                                          "access_log_file",
                                          "client_header_timeout",
                                          "client_body_timeout",
                                          "keepalive_timeout",
                                          "send_timeout",
                                          "max_header_size",
                                          "max_headers",
                                          "max_body_size",
                                          "certificates",
                                          "tls_min_version",
                                          "tls_ciphers",
                                          "tls_ciphersuites",
                                          "tls_session_tickets",
                                          "tls_handshake_timeout",
                                          "client_ca",
                                          "client_verify",
                                          "alpn",
                                          "redirect_https",
                                          "https_port",
                                          "h2c",
                                          "h2_max_concurrent_streams",
                                          "tunnel_idle_timeout",
                                          "trusted_proxies",
                                          "merge_slashes",
                                          "underscores_in_headers",
                                          "max_uri_size",
                                          NULL};

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

static void load_server(loader *ld, weir_cfg_server *s, const weir_toml_value *t, char ***loc_names,
                        size_t *n_loc_names, int *loc_line)
{
    char section[300];
    snprintf(section, sizeof(section), "servers.%s", s->name);
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] must be a table", section);
        return;
    }
    weir__cfg_check_keys(ld, t, section, server_keys);
    int line = s->line;
    s->addrs = weir__cfg_get_string_list(ld, t, "addr", section, &s->n_addrs, &line);
    if (!s->addrs && !weir__cfg_entry_of(t, "addr", &(weir_toml_entry){0}))
        weir__cfg_err_at(ld, s->line, "[%s] needs 'addr'", section);
    else if (s->addrs && s->n_addrs == 0)
        weir__cfg_err_at(ld, line, "'addr' in [%s] is empty", section);
    for (size_t i = 0; s->addrs && i < s->n_addrs; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (weir__addr_parse(s->addrs[i], &ss, &len) < 0)
            weir__cfg_err_at(ld, line, "invalid listen address '%s' in [%s]: expected \"ip:port\"",
                             s->addrs[i], section);
    }
    *loc_line = s->line;
    *loc_names = weir__cfg_get_string_list(ld, t, "locations", section, n_loc_names, loc_line);
    if (!*loc_names && !weir__cfg_entry_of(t, "locations", &(weir_toml_entry){0}))
        weir__cfg_err_at(ld, s->line, "[%s] needs 'locations'", section);

    bool present;
    char *log = weir__cfg_dup_string(ld, t, "access_log", section, &present);
    if (log) {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "access_log", &e);
        char err[256];
        s->access_log = weir__access_log_compile(log, err, sizeof(err));
        if (!s->access_log && strcmp(log, "off") != 0)
            weir__cfg_err_at(ld, e.line, "'access_log' in [%s]: %s", section, err);
        free(log);
    }
    s->access_log_file = weir__cfg_dup_string(ld, t, "access_log_file", section, &present);
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
    int64_t v;
    if (weir__cfg_get_int(ld, t, "max_headers", section, 1, 1000, &v))
        o->max_headers = (uint32_t)v;
    if (weir__cfg_get_size(ld, t, "max_body_size", section, UINT64_MAX / 2, &size))
        o->max_body_bytes = size;
    weir__cfg_get_duration(ld, t, "tls_handshake_timeout", section, 3600000, false,
                           &o->tls_handshake_timeout_ms);
    weir__cfg_load_server_tls(ld, s, t, section);
}

/* ---- the document ---- */

static const char *const top_keys[] = {"basic",     "admin",        "servers", "locations",
                                       "upstreams", "certificates", NULL};

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
    if (weir__addr_equal((const struct sockaddr *)a, (const struct sockaddr *)b))
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

static void build_router(loader *ld, weir_cfg_server *s)
{
    weir_route_spec *specs = calloc(s->n_locations ? s->n_locations : 1, sizeof(*specs));
    if (!specs)
        return;
    for (size_t i = 0; s->locations && i < s->n_locations; i++) {
        weir_cfg_location *l = s->locations[i];
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
        if (sscanf(err, "location %zu:", &idx) == 1 && idx < s->n_locations) {
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
        free(s->access_log_file);
        free(s->tls.certs);
        free(s->tls.ciphers);
        free(s->tls.ciphersuites);
        free(s->tls.alpn);
        free(s->tls.client_ca);
    }
    free(c->servers);
    for (size_t i = 0; i < c->n_certs; i++) {
        weir_cfg_cert *x = &c->certs[i];
        free(x->name);
        free(x->cert);
        free(x->key);
        free(x->chain);
        weir__cfg_free_list(x->domains, x->n_domains);
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
        free_headers(&l->proxy_set);
        free_headers(&l->proxy_add);
        free_headers(&l->proxy_remove);
        free_headers(&l->resp_set);
        free_headers(&l->resp_add);
        free_headers(&l->resp_remove);
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
        weir_tls_client_free(u->tls_client);
        weir_upstream_free(u->lb);
    }
    free(c->upstreams);
    free(c->basic.pid_file);
    free(c->basic.error_log);
    free(c->basic.log_level);
    free(c->basic.upgrade_sock);
    free(c->basic.temp_dir);
    free(c->admin.addr);
    if (c->admin.token) /* a secret: do not leave it in freed memory */
        explicit_bzero(c->admin.token, strlen(c->admin.token));
    free(c->admin.token);
    free(c->admin.token_file);
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
        char *copy = strdup(buf);
        char **nv = realloc(errs->v, (errs->n + 1) * sizeof(*nv));
        if (copy && nv) {
            errs->v = nv;
            errs->v[errs->n++] = copy;
        } else {
            free(copy);
            if (nv)
                errs->v = nv;
        }
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
    const weir_toml_value *ups = section_of(&ld, root, "upstreams");
    const weir_toml_value *locs = section_of(&ld, root, "locations");
    const weir_toml_value *srvs = section_of(&ld, root, "servers");

    if (ups) {
        c->upstreams = alloc_named(&ld, ups, sizeof(weir_cfg_upstream), &c->n_upstreams);
        for (size_t i = 0; i < c->n_upstreams; i++) {
            weir_toml_entry e;
            weir_toml_table_entry(ups, i, &e);
            load_upstream(&ld, &c->upstreams[i], e.value);
        }
    }
    if (locs) {
        c->locations = alloc_named(&ld, locs, sizeof(weir_cfg_location), &c->n_locations);
        for (size_t i = 0; i < c->n_locations; i++) {
            weir_toml_entry e;
            weir_toml_table_entry(locs, i, &e);
            char *up_name = NULL;
            int up_line = 0;
            load_location(&ld, &c->locations[i], e.value, &up_name, &up_line);
            if (up_name) {
                c->locations[i].upstream = find_upstream(c, up_name);
                if (!c->locations[i].upstream) {
                    const char *known[64] = {0};
                    for (size_t k = 0; k < c->n_upstreams && k < 63; k++)
                        known[k] = c->upstreams[k].name;
                    const char *s = weir__cfg_suggest(up_name, known);
                    weir__cfg_err_at(&ld, up_line,
                                     "[locations.%s] refers to undefined upstream '%s'%s%s%s",
                                     c->locations[i].name, up_name, s ? "; did you mean '" : "",
                                     s ? s : "", s ? "'?" : "");
                }
                free(up_name);
            }
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
            int names_line = s->line;
            load_server(&ld, s, e.value, &names, &n_names, &names_line);
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
        /* Listen addresses are unique across all servers. */
        for (size_t i = 0; i < c->n_servers; i++) {
            for (size_t a = 0; a < c->servers[i].n_addrs; a++) {
                struct sockaddr_storage x, y;
                socklen_t xl, yl;
                if (weir__addr_parse(c->servers[i].addrs[a], &x, &xl) < 0)
                    continue;
                for (size_t j = 0; j <= i; j++) {
                    for (size_t b = 0; b < (j == i ? a : c->servers[j].n_addrs); b++) {
                        if (weir__addr_parse(c->servers[j].addrs[b], &y, &yl) == 0 &&
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
        if (c->admin.addr && weir__addr_parse(c->admin.addr, &adm, &al) == 0) {
            for (size_t i = 0; i < c->n_servers; i++) {
                for (size_t b = 0; b < c->servers[i].n_addrs; b++) {
                    if (weir__addr_parse(c->servers[i].addrs[b], &y, &yl) == 0 &&
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
