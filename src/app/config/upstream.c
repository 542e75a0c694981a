/*
 * upstream.c - [upstreams.NAME]: backends, balancing, health checks, retries,
 * limits and TLS to the backends (see config.h).
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
#include "app/toml/toml.h"
#include "weir/addr.h"

/* ---- [upstreams.NAME] ---- */

static void load_health_check(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                              const char *section);

const weir_cfg_key weir__cfg_keys_upstream[] = {
    {"addrs", WEIR_CT_STRINGS, NULL},
    {"algo", WEIR_CT_STRING, NULL},
    {"connection_timeout", WEIR_CT_DURATION, NULL},
    {"total_connection_timeout", WEIR_CT_DURATION, NULL},
    {"read_timeout", WEIR_CT_DURATION, NULL},
    {"write_timeout", WEIR_CT_DURATION, NULL},
    {"idle_timeout", WEIR_CT_DURATION, NULL},
    {"keepalive", WEIR_CT_INTEGER, NULL},
    {"max_connection_age", WEIR_CT_DURATION, NULL},
    {"max_requests", WEIR_CT_INTEGER, NULL},
    {"max_retries", WEIR_CT_INTEGER, NULL},
    {"retry_on", WEIR_CT_STRINGS, NULL},
    {"retry_timeout", WEIR_CT_DURATION, NULL},
    {"max_conns", WEIR_CT_INTEGER, NULL},
    {"queue_timeout", WEIR_CT_DURATION, NULL},
    {"max_fails", WEIR_CT_INTEGER, NULL},
    {"fail_timeout", WEIR_CT_DURATION, NULL},
    {"sticky_cookie", WEIR_CT_STRING, NULL},
    {"health_check", WEIR_CT_STRING, NULL},
    {"health_check_interval", WEIR_CT_DURATION, NULL},
    {"health_check_timeout", WEIR_CT_DURATION, NULL},
    {"health_check_rise", WEIR_CT_INTEGER, NULL},
    {"health_check_fall", WEIR_CT_INTEGER, NULL},
    {"health_check_status", WEIR_CT_INTEGERS, NULL},
    {"health_check_body", WEIR_CT_STRING, NULL},
    {"health_check_send", WEIR_CT_STRING, NULL},
    {"tls", WEIR_CT_BOOLEAN, NULL},
    {"sni", WEIR_CT_STRING, NULL},
    {"verify_cert", WEIR_CT_BOOLEAN, NULL},
    {"ca_file", WEIR_CT_STRING, NULL},
    {"client_cert", WEIR_CT_STRING, NULL},
    {"alpn", WEIR_CT_STRING, "h1|h2|h2,h1"},
    {"discovery", WEIR_CT_STRING, "static|dns|srv"},
    {"update_frequency", WEIR_CT_DURATION, NULL},
    {"dns_server", WEIR_CT_STRINGS, NULL},
    {"dns_domain", WEIR_CT_STRINGS, NULL},
    {"dns_search", WEIR_CT_STRINGS, NULL},
    {"ipv4_only", WEIR_CT_BOOLEAN, NULL},
    {"ipv6_only", WEIR_CT_BOOLEAN, NULL},
    {"dns_min_ttl", WEIR_CT_DURATION, NULL},
    {"dns_timeout", WEIR_CT_DURATION, NULL},
    {"send_proxy_protocol", WEIR_CT_STRING, "v1|v2"},
    {NULL, 0, NULL}};

/* retry_on = ["connect", "reset", "timeout", "502", "503", "504",
 * "non_idempotent"]: which failures send a request to another backend
 * (nginx's proxy_next_upstream, HAProxy's retry-on). */
static void load_send_proxy(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                            const char *section);
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
    for (size_t i = 0; u->discovery == WEIR_CFG_DISCOVERY_STATIC && i < u->n_backends; i++) {
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
    /* Before the health check: what is found at load starts healthy, as
     * static backends do. */
    weir__cfg_start_discovery(ld, u, section);
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
    if (weir_addr_parse(addr, &ss, &len) == 0) {
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

void weir__cfg_load_upstream(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t)
{
    char section[300];
    snprintf(section, sizeof(section), "upstreams.%s", u->name);
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] must be a table", section);
        return;
    }
    weir__cfg_check_keys(ld, t, section, weir__cfg_keys_upstream);
    size_t n = 0;
    int line = u->line;
    char **addrs = weir__cfg_get_string_list(ld, t, "addrs", section, &n, &line);
    if (!addrs && !weir__cfg_entry_of(t, "addrs", &(weir_toml_entry){0}))
        weir__cfg_err_at(ld, u->line, "[%s] needs 'addrs'", section);
    weir__cfg_load_discovery(ld, u, t, section);
    /* An empty list is valid: the upstream answers 503 until backends are
     * added at runtime. */
    for (size_t i = 0; addrs && i < n; i++) {
        if (u->discovery == WEIR_CFG_DISCOVERY_STATIC)
            add_backend(ld, u, addrs[i], line, section);
        else
            weir__cfg_discovery_entry(ld, u, addrs[i], line, section);
    }
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
    if (u->sticky_cookie && !weir__cfg_valid_token(u->sticky_cookie)) {
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
    load_send_proxy(ld, u, t, section);
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
    /* Connection aging: 0 (the default) is no limit. */
    weir__cfg_get_duration(ld, t, "max_connection_age", section, 30 * 86400000ull, true,
                           &u->max_connection_age_ms);
    if (weir__cfg_get_int(ld, t, "max_requests", section, 0, 1000000000, &v))
        u->max_requests = (uint32_t)v;
    load_upstream_tls(ld, u, t, section);
    weir_toml_entry e;
    if (u->send_proxy && (u->h2 || u->h2_or_h1) && weir__cfg_entry_of(t, "send_proxy_protocol", &e))
        weir__cfg_err_at(ld, e.line,
                         "'send_proxy_protocol' in [%s] cannot go with HTTP/2 to the backends "
                         "(alpn): an HTTP/2 connection carries many clients, a PROXY header "
                         "names one",
                         section);
}

/* send_proxy_protocol = "v1" | "v2": every new connection to a backend
 * starts with a PROXY header naming the client (its checks too, with a
 * header naming none). */
static void load_send_proxy(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                            const char *section)
{
    bool present;
    char *v = weir__cfg_dup_string(ld, t, "send_proxy_protocol", section, &present);
    if (!v)
        return;
    weir_toml_entry e;
    weir__cfg_entry_of(t, "send_proxy_protocol", &e);
    if (strcmp(v, "v1") == 0)
        u->send_proxy = 1;
    else if (strcmp(v, "v2") == 0)
        u->send_proxy = 2;
    else
        weir__cfg_err_at(ld, e.line,
                         "'send_proxy_protocol' in [%s] is '%s': expected \"v1\" or \"v2\"",
                         section, v);
    free(v);
    u->hc.send_proxy = u->send_proxy;
}

/* health_check = "tcp://", "http://HOST/PATH" ("http:///PATH" sends the
 * backend's address as Host) or "grpc://[SERVICE]" (grpc.health.v1 over
 * h2c), with the health_check_* keys. */
/*
 * Pingap writes a check's settings in its URL's query:
 * "http://name/ping?connection_timeout=3s&read_timeout=1s&check_frequency=10s
 * &success=2&failure=3&reuse". Those are taken out of the URL (in place) and
 * applied; other parameters stay in the probe's path. The health_check_*
 * keys, read after, win.
 */
static void pingap_check_options(loader *ld, int line, char *url, weir_health_check *hc,
                                 const char *section)
{
    char *q = strchr(url, '?');
    if (!q)
        return;
    char keep[1024] = "";
    size_t kl = 0;
    char *p = q + 1;
    while (p && *p) {
        char *amp = strchr(p, '&');
        if (amp)
            *amp = '\0';
        char *eq = strchr(p, '=');
        const char *val = eq ? eq + 1 : "";
        size_t nl = eq ? (size_t)(eq - p) : strlen(p);
        uint64_t ms = 0;
        int64_t n = 0;
        char *end = NULL;
#define IS(name) (nl == sizeof(name) - 1 && memcmp(p, name, nl) == 0)
        if (IS("connection_timeout") || IS("read_timeout") || IS("check_frequency")) {
            if (!weir__cfg_parse_duration(val, &ms) || ms == 0 || ms > 3600000) {
                weir__cfg_err_at(ld, line, "'health_check' in [%s]: '%.*s' must be a duration",
                                 section, (int)nl, p);
            } else if (IS("check_frequency")) {
                hc->interval_ms = (uint32_t)ms;
            } else if (!hc->timeout_ms || (uint32_t)ms > hc->timeout_ms) {
                /* One timeout covers connecting and reading: the larger. */
                hc->timeout_ms = (uint32_t)ms;
            }
        } else if (IS("success") || IS("failure")) {
            n = strtoll(val, &end, 10);
            if (!*val || *end || n < 1 || n > 100)
                weir__cfg_err_at(ld, line, "'health_check' in [%s]: '%.*s' must be 1..100", section,
                                 (int)nl, p);
            else if (IS("success"))
                hc->rise = (uint32_t)n;
            else
                hc->fall = (uint32_t)n;
        } else if (IS("reuse") || IS("ssl") || IS("tls")) {
            /* connection reuse and TLS follow the upstream's own settings */
        } else if (kl + strlen(p) + 2 < sizeof(keep)) {
            kl += (size_t)snprintf(keep + kl, sizeof(keep) - kl, "%s%s", kl ? "&" : "", p);
        }
#undef IS
        p = amp ? amp + 1 : NULL;
    }
    if (kl)
        snprintf(q, strlen(q) + 1, "?%s", keep);
    else
        *q = '\0';
}

static void load_health_check(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                              const char *section)
{
    weir_health_check *hc = &u->hc;
    bool present;
    char *url = weir__cfg_dup_string(ld, t, "health_check", section, &present);
    weir_toml_entry e;
    int line = weir__cfg_entry_of(t, "health_check", &e) ? e.line : u->line;
    if (url)
        pingap_check_options(ld, line, url, hc, section);
    if (url) {
        /* "tcp://NAME" (Pingap names the upstream): the backends' ports. */
        if (strcmp(url, "tcp") == 0 || strncmp(url, "tcp://", 6) == 0) {
            hc->kind = WEIR_HEALTH_TCP;
        } else if (strcmp(url, "udp://") == 0) {
            hc->kind = WEIR_HEALTH_UDP;
        } else if (strncmp(url, "dns://", 6) == 0) {
            const char *name = url + 6;
            size_t len = strlen(name);
            bool ok = len > 0 && len <= 254 && name[0] != '.' && !strstr(name, "..");
            for (const char *l = name; ok && *l;) { /* labels of 1..63 bytes */
                const char *dot = strchr(l, '.');
                size_t ll = dot ? (size_t)(dot - l) : strlen(l);
                ok = ll <= 63;
                l += ll + (dot ? 1 : 0);
            }
            for (const char *q = name; ok && *q; q++)
                ok = (unsigned char)*q > 0x20 && *q != 0x7f && *q != '/';
            if (!ok)
                weir__cfg_err_at(ld, line,
                                 "'health_check' in [%s]: \"dns://NAME\" takes the name to ask "
                                 "for (\"dns://health.example.com\"; labels of at most 63 "
                                 "characters, 253 in all)",
                                 section);
            else {
                hc->kind = WEIR_HEALTH_DNS;
                snprintf(hc->host, sizeof(hc->host), "%.*s", (int)(len - (name[len - 1] == '.')),
                         name);
            }
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
                                 "\"http://HOST/PATH\", \"grpc://[SERVICE]\", \"udp://\" or "
                                 "\"dns://NAME\"",
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
                             "'health_check' in [%s] must be \"tcp://\", \"http://HOST/PATH\", "
                             "\"grpc://[SERVICE]\", \"udp://\" or \"dns://NAME\"",
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
    char *send = weir__cfg_dup_string(ld, t, "health_check_send", section, &present);
    if (send) {
        size_t n = strlen(send);
        if (hc->kind != WEIR_HEALTH_UDP)
            weir__cfg_err_at(ld, line,
                             "'health_check_send' in [%s] is for health_check = "
                             "\"udp://\"",
                             section);
        else if (n > sizeof(hc->payload))
            weir__cfg_err_at(ld, line, "'health_check_send' in [%s] is over %zu bytes", section,
                             sizeof(hc->payload));
        else {
            memcpy(hc->payload, send, n);
            hc->payload_len = n;
        }
        free(send);
    }
    if ((hc->kind == WEIR_HEALTH_UDP || hc->kind == WEIR_HEALTH_DNS) && hc->n_expect_status)
        weir__cfg_err_at(ld, line, "'health_check_status' in [%s] is for HTTP checks", section);
    if (hc->kind == WEIR_HEALTH_DNS && hc->expect_body[0])
        weir__cfg_err_at(ld, line, "'health_check_body' in [%s] is not for a dns:// check",
                         section);
    if (hc->kind == WEIR_HEALTH_NONE && (hc->interval_ms || hc->timeout_ms || hc->rise ||
                                         hc->fall || hc->n_expect_status || hc->expect_body[0]))
        weir__cfg_err_at(ld, line, "health_check_* settings in [%s] need 'health_check'", section);
}
