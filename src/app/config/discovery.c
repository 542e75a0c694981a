/*
 * discovery.c - [upstreams.NAME] discovery = "dns" | "srv": the names in
 * addrs resolved on the control thread every update_frequency (or at the
 * records' TTL), with the dns_* settings; Pingap's keys (discovery,
 * update_frequency, dns_server, dns_domain, dns_search, ipv4_only).
 *
 * At load the names are resolved once, blocking (so that the upstream
 * serves from its first request); a name that does not resolve then is a
 * warning, not an error: discovery keeps trying, and the upstream answers
 * 503 until some name resolves.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "app/config/read.h"
#include "weir/addr.h"

const char *const weir__cfg_discovery_keys[] = {
    "discovery", "update_frequency", "dns_server",  "dns_domain",  "dns_search",
    "ipv4_only", "ipv6_only",        "dns_min_ttl", "dns_timeout", NULL};

/* A string or list of strings, split at commas and blanks, appended to
 * *v. */
static void add_words(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                      char ***v, size_t *n)
{
    size_t k = 0;
    int line = 0;
    char **items = weir__cfg_get_string_list(ld, t, key, section, &k, &line);
    for (size_t i = 0; items && i < k; i++) {
        for (char *save = NULL, *w = strtok_r(items[i], ", \t", &save); w;
             w = strtok_r(NULL, ", \t", &save)) {
            char **nv = realloc(*v, (*n + 1) * sizeof(*nv));
            if (!nv)
                break;
            *v = nv;
            if (((*v)[*n] = strdup(w)))
                (*n)++;
        }
    }
    weir__cfg_free_list(items, k);
}

static bool valid_host(const char *h, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

void weir__cfg_load_discovery(loader *ld, weir_cfg_upstream *u, const weir_toml_value *t,
                              const char *section)
{
    bool present;
    weir_toml_entry e;
    char *kind = weir__cfg_dup_string(ld, t, "discovery", section, &present);
    u->discovery_line = weir__cfg_entry_of(t, "discovery", &e) ? e.line : u->line;
    if (kind) {
        if (strcasecmp(kind, "dns") == 0)
            u->discovery = WEIR_CFG_DISCOVERY_DNS;
        else if (strcasecmp(kind, "srv") == 0)
            u->discovery = WEIR_CFG_DISCOVERY_SRV;
        else if (strcasecmp(kind, "static") == 0 || strcasecmp(kind, "common") == 0)
            u->discovery = WEIR_CFG_DISCOVERY_STATIC;
        else
            weir__cfg_err_at(ld, u->discovery_line,
                             "'discovery' in [%s] is '%s': expected \"static\", \"dns\" or "
                             "\"srv\"",
                             section, kind);
        free(kind);
    }
    if (u->discovery == WEIR_CFG_DISCOVERY_STATIC) {
        for (size_t i = 1; weir__cfg_discovery_keys[i]; i++) {
            if (weir__cfg_entry_of(t, weir__cfg_discovery_keys[i], &e))
                weir__cfg_err_at(ld, e.line, "'%s' in [%s] needs discovery = \"dns\" or \"srv\"",
                                 weir__cfg_discovery_keys[i], section);
        }
        return;
    }
    weir_dns_options *o = &u->dns;
    o->srv = u->discovery == WEIR_CFG_DISCOVERY_SRV;
    o->interval_ms = 30000;
    weir__cfg_get_duration(ld, t, "update_frequency", section, 86400000, false, &o->interval_ms);
    if (o->interval_ms < 1000 && weir__cfg_entry_of(t, "update_frequency", &e))
        weir__cfg_err_at(ld, e.line, "'update_frequency' in [%s] must be at least 1s", section);
    o->min_ttl_ms = 1000;
    weir__cfg_get_duration(ld, t, "dns_min_ttl", section, 86400000, false, &o->min_ttl_ms);
    o->timeout_ms = 2000;
    weir__cfg_get_duration(ld, t, "dns_timeout", section, 60000, false, &o->timeout_ms);
    o->tries = 2;
    o->retry_min_ms = 1000;
    /* dns_server: "ip[:port]" items, comma-separated, or a list. */
    char **servers = NULL, **search = NULL;
    size_t n_servers = 0, n_search = 0;
    add_words(ld, t, "dns_server", section, &servers, &n_servers);
    if (n_servers) {
        size_t len = 1;
        for (size_t i = 0; i < n_servers; i++)
            len += strlen(servers[i]) + 1;
        char *csv = calloc(1, len);
        for (size_t i = 0; csv && i < n_servers; i++) {
            if (i)
                strcat(csv, ",");
            strcat(csv, servers[i]);
        }
        o->servers = csv;
    }
    weir__cfg_free_list(servers, n_servers);
    /* dns_domain first (Pingap appends it to unqualified names), then
     * dns_search. */
    add_words(ld, t, "dns_domain", section, &search, &n_search);
    add_words(ld, t, "dns_search", section, &search, &n_search);
    o->search = (const char *const *)search;
    o->n_search = n_search;
    for (size_t i = 0; i < n_search; i++) {
        if (!valid_host(search[i], strlen(search[i]))) {
            if (!weir__cfg_entry_of(t, "dns_search", &e))
                weir__cfg_entry_of(t, "dns_domain", &e);
            weir__cfg_err_at(ld, e.line, "'%s' in [%s] is not a domain name", search[i], section);
        }
    }
    bool v4 = false, v6 = false;
    weir__cfg_get_bool(ld, t, "ipv4_only", section, &v4);
    weir__cfg_get_bool(ld, t, "ipv6_only", section, &v6);
    if (v4 && v6 && weir__cfg_entry_of(t, "ipv6_only", &e))
        weir__cfg_err_at(ld, e.line, "[%s] sets both 'ipv4_only' and 'ipv6_only'", section);
    o->family = v4 ? AF_INET : v6 ? AF_INET6 : AF_UNSPEC;
}

/* One addrs entry of a discovering upstream: "host:port [weight]" (dns),
 * "_service._proto.name" (srv), or a numeric "ip:port [weight]" (either:
 * always a member). */
bool weir__cfg_discovery_entry(loader *ld, weir_cfg_upstream *u, const char *text, int line,
                               const char *section)
{
    char buf[512];
    if (strlen(text) >= sizeof(buf)) {
        weir__cfg_err_at(ld, line, "address too long in [%s]", section);
        return false;
    }
    strcpy(buf, text);
    char *save = NULL;
    char *addr = strtok_r(buf, " \t", &save);
    char *weight_s = strtok_r(NULL, " \t", &save);
    char *extra = strtok_r(NULL, " \t", &save);
    long weight = 1;
    if (!addr || extra) {
        weir__cfg_err_at(ld, line, "invalid address '%s' in [%s]", text, section);
        return false;
    }
    if (weight_s) {
        char *end;
        weight = strtol(weight_s, &end, 10);
        if (*end || weight < 1 || weight > 10000) {
            weir__cfg_err_at(ld, line, "invalid weight '%s' in [%s]: expected 1..10000", weight_s,
                             section);
            return false;
        }
    }
    weir_dns_name name = {.weight = (uint32_t)weight};
    char host[300];
    struct sockaddr_storage ss;
    socklen_t sl;
    if (weir_addr_parse(addr, &ss, &sl) == 0) {
        weir_addr_format_ip((struct sockaddr *)&ss, host, sizeof(host));
        name.port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                  : ((struct sockaddr_in6 *)&ss)->sin6_port);
    } else if (u->discovery == WEIR_CFG_DISCOVERY_SRV) {
        if (strchr(addr, ':') || weight_s) {
            weir__cfg_err_at(ld, line,
                             "invalid SRV name '%s' in [%s]: SRV records give the port and the "
                             "weight (write \"_service._proto.name\")",
                             text, section);
            return false;
        }
        if (!valid_host(addr, strlen(addr))) {
            weir__cfg_err_at(ld, line, "invalid SRV name '%s' in [%s]", addr, section);
            return false;
        }
        snprintf(host, sizeof(host), "%s", addr);
    } else {
        char *colon = strrchr(addr, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || !valid_host(addr, (size_t)(colon - addr)) || !colon[1] || *end || port < 1 ||
            port > 65535) {
            weir__cfg_err_at(ld, line, "invalid address '%s' in [%s]: expected \"host:port\"", addr,
                             section);
            return false;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
        name.port = (uint16_t)port;
    }
    weir_cfg_backend *nb = realloc(u->backends, (u->n_backends + 1) * sizeof(*nb));
    weir_dns_name *nn = realloc((void *)u->dns.names, (u->dns.n_names + 1) * sizeof(*nn));
    if (nb)
        u->backends = nb;
    if (nn)
        u->dns.names = nn;
    if (!nb || !nn || !(name.host = strdup(host)))
        return false;
    nn[u->dns.n_names++] = name;
    weir_cfg_backend *b = &u->backends[u->n_backends++];
    memset(b, 0, sizeof(*b));
    b->text = strdup(text);
    b->weight = (uint32_t)weight;
    return true;
}

/* discovery_spec: what the lookups ask (the kind, the family, the search
 * domains and the names), so that a reload can tell whether the upstream
 * looks for the same backends, and may start from what the running one
 * found when its names do not resolve. Timeouts, intervals and the
 * servers asked do not change what is looked for. */
static char *spec_of(const weir_cfg_upstream *u)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        return NULL;
    const weir_dns_options *o = &u->dns;
    fprintf(f, "%d|%d", u->discovery, o->family);
    for (size_t i = 0; i < o->n_search; i++)
        fprintf(f, "|s:%s", o->search[i]);
    for (size_t i = 0; i < o->n_names; i++)
        fprintf(f, "|n:%s:%u:%u", o->names[i].host, o->names[i].port, o->names[i].weight);
    fclose(f);
    return s;
}

void weir__cfg_start_discovery(loader *ld, weir_cfg_upstream *u, const char *section)
{
    if (u->discovery == WEIR_CFG_DISCOVERY_STATIC || !u->lb || ld->errs->n)
        return;
    if (u->dns.n_names == 0) {
        weir__cfg_err_at(ld, u->discovery_line,
                         "[%s] discovers its backends: 'addrs' must name some", section);
        return;
    }
    u->discovery_spec = spec_of(u);
    char err[512];
    weir_lookup_service svc;
    if (weir_lookup_dns_new(&u->dns, &svc, err, sizeof(err)) != WEIR_OK) {
        weir__cfg_err_at(ld, u->discovery_line, "[%s]: discovery: %s", section, err);
        return;
    }
    weir_lb_target *v = NULL;
    size_t n = 0;
    uint32_t ttl_ms = 0;
    int rc = WEIR_ERR;
    bool known = false;
    if (weir__config_discovered && u->discovery_spec &&
        (v = weir__config_discovered(u->name, u->discovery_spec, &n)) && n) {
        /* A reload: start from what the running upstream found; the first
         * round comes at once, without holding the reload up. */
        known = true;
        rc = WEIR_OK;
    } else if (weir__config_resolve_names) {
        rc = weir_lookup_dns_now(&u->dns, &v, &n, &ttl_ms, err, sizeof(err));
        if (rc == WEIR_ERR_INVAL)
            weir__cfg_err_at(ld, u->discovery_line, "[%s]: discovery: %s", section, err);
        else if (rc != WEIR_OK)
            weir__cfg_warn_at(ld, u->discovery_line,
                              "[%s]: %s; discovery keeps trying (the upstream answers 503 until a "
                              "name resolves)",
                              section, err);
        else if (n == 0)
            weir__cfg_warn_at(ld, u->discovery_line,
                              "[%s]: no name in 'addrs' has an address yet (%s%s); discovery "
                              "keeps trying",
                              section, u->dns.names[0].host, u->dns.n_names > 1 ? ", ..." : "");
    }
    if (n && weir_upstream_update(u->lb, v, n, NULL) != WEIR_OK)
        weir__cfg_err_at(ld, u->discovery_line, "[%s]: out of memory", section);
    free(v);
    /* After a full answer the next round is due at its TTL; otherwise as
     * soon as the control thread runs. */
    svc.first_ms = rc == WEIR_OK && n && !known ? (ttl_ms ? ttl_ms : svc.interval_ms) : 0;
    if (weir_upstream_set_lookup(u->lb, &svc) != WEIR_OK) {
        svc.free(svc.ud);
        weir__cfg_err_at(ld, u->discovery_line, "[%s]: out of memory", section);
    } else if (weir__config_resolve_names && !known && rc != WEIR_ERR_INVAL) {
        weir_upstream_note_lookup(u->lb, rc != WEIR_OK ? err : n ? NULL : "empty answer");
    }
}
