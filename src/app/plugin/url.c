/*
 * url.c - a plugin's http(s) URL to a service it asks with sub-requests
 * (forward_auth's auth_url, jwt's jwks_url): the peer, resolved when the
 * file is loaded, its TLS settings, and what to send.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config/config.h"
#include "app/plugin/plugin.h"

void weir__plugin_url_free(weir_plugin_url *u)
{
    weir_tls_client_free(u->tls);
    free(u->authority);
    free(u->target);
    memset(u, 0, sizeof(*u));
}

/* Reads url into u: scheme, host (resolved now), port, target. */
static void parse(loader *ld, weir_plugin_url *u, const char *key, const char *url, int line,
                  const char *section)
{
    bool tls = strncmp(url, "https://", 8) == 0;
    if (!tls && strncmp(url, "http://", 7) != 0) {
        weir__cfg_err_at(ld, line, "'%s' in [%s] must start with http:// or https://", key,
                         section);
        return;
    }
    const char *host = url + (tls ? 8 : 7);
    const char *slash = strchr(host, '/');
    size_t hl = slash ? (size_t)(slash - host) : strlen(host);
    char hostport[300];
    if (hl == 0 || hl >= 256 || strpbrk(url, " \t\r\n#") || memchr(host, '@', hl)) {
        weir__cfg_err_at(ld, line, "'%s' in [%s] is not a URL weir can ask", key, section);
        return;
    }
    memcpy(hostport, host, hl);
    hostport[hl] = '\0';
    u->authority = strdup(hostport);
    u->target = strdup(slash ? slash : "/");
    char name[256], port[8];
    snprintf(port, sizeof(port), "%s", tls ? "443" : "80");
    if (hostport[0] == '[') { /* [v6]:port */
        char *rb = strchr(hostport, ']');
        if (!rb || (rb[1] && rb[1] != ':')) {
            weir__cfg_err_at(ld, line, "'%s' in [%s]: bad IPv6 address", key, section);
            return;
        }
        *rb = '\0';
        memcpy(name, hostport + 1, strlen(hostport + 1) + 1);
        if (rb[1] == ':')
            snprintf(port, sizeof(port), "%.6s", rb + 2);
    } else {
        char *colon = strrchr(hostport, ':');
        if (colon) {
            *colon = '\0';
            snprintf(port, sizeof(port), "%.6s", colon + 1);
        }
        memcpy(name, hostport, strlen(hostport) + 1);
    }
    char *end;
    long pn = strtol(port, &end, 10);
    if (*end || pn < 1 || pn > 65535 || !name[0]) {
        weir__cfg_err_at(ld, line, "'%s' in [%s]: bad host or port", key, section);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = weir__config_resolve_names ? 0 : AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(name, port, &hints, &res);
    if (rc != 0 || !res) {
        weir__cfg_err_at(ld, line, "'%s' in [%s]: cannot resolve '%s': %s", key, section, name,
                         gai_strerror(rc));
        return;
    }
    memcpy(&u->peer.addr, res->ai_addr, res->ai_addrlen);
    u->peer.addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    u->peer.tls = tls;
    struct addrinfo nh = {.ai_flags = AI_NUMERICHOST};
    struct addrinfo *numeric = NULL;
    if (tls && getaddrinfo(name, NULL, &nh, &numeric) != 0) /* a name: its SNI */
        memcpy(u->peer.sni, name, strlen(name) + 1);
    if (numeric)
        freeaddrinfo(numeric);
}

bool weir__plugin_url(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                      weir_plugin_url *u)
{
    memset(u, 0, sizeof(*u));
    weir_toml_entry e;
    int line = weir__cfg_entry_of(t, key, &e) ? e.line : weir_toml_line(t);
    bool present;
    char *url = weir__cfg_dup_string(ld, t, key, section, &present);
    if (!url)
        return present; /* absent: the caller says whether it is needed */
    parse(ld, u, key, url, line, section);
    free(url);
    char *ca = weir__cfg_dup_string(ld, t, "ca_file", section, &present);
    if (ca && !u->peer.tls)
        weir__cfg_err_at(ld, line, "'ca_file' in [%s] is for an https '%s'", section, key);
    if (u->peer.tls && ld->errs->n == 0) {
        weir_tls_client_spec spec = {.ca_file = ca};
        char err[512];
        u->tls = weir_tls_client_new(&spec, err, sizeof(err));
        if (!u->tls)
            weir__cfg_err_at(ld, line, "[%s]: TLS: %s", section, err);
        u->peer.tls_client = u->tls;
    }
    free(ca);
    u->peer.keepalive = 32;
    u->peer.idle_timeout_ms = 60000;
    return true;
}
