/*
 * tls.c - the TLS parts of the configuration: [certificates.NAME]
 * sections and the TLS keys of [servers.NAME] (see config.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "app/acme/jws.h"
#include "app/config/read.h"
#include "app/plugin/plugins.h"
#include "weir/tls.h"

/* ---- [certificates.NAME] ---- */

const weir_cfg_key weir__cfg_keys_cert[] = {
    {"cert", WEIR_CT_STRING, NULL},
    {"key", WEIR_CT_STRING, NULL},
    {"chain", WEIR_CT_STRING, NULL},
    {"domains", WEIR_CT_STRINGS, NULL},
    {"default", WEIR_CT_BOOLEAN, NULL},
    {"acme", WEIR_CT_STRING, NULL},
    {"email", WEIR_CT_STRING, NULL},
    {"key_type", WEIR_CT_STRING, "ec256|ec384|rsa2048|rsa4096"},
    {"storage", WEIR_CT_STRING, NULL},
    {"acme_ca", WEIR_CT_STRING, NULL},
    {"renew_before", WEIR_CT_DURATION, NULL},
    {"dns_hook", WEIR_CT_STRING, NULL},
    {"challenge", WEIR_CT_STRING, "http-01|tls-alpn-01|dns-01"},
    {NULL, 0, NULL}};

#define LETSENCRYPT "https://acme-v02.api.letsencrypt.org/directory"
#define LETSENCRYPT_STAGING "https://acme-staging-v02.api.letsencrypt.org/directory"
#define DEFAULT_ACME_STORAGE "/var/lib/weir/acme"

static bool file_exists(const char *path)
{
    return path && access(path, R_OK) == 0;
}

/* The acme keys of [certificates.NAME]: what the certificate will be, and
 * the self-signed one served until then. */
static void load_acme(loader *ld, weir_cfg_cert *c, const weir_toml_value *t, const char *section)
{
    weir_toml_entry e;
    int at = weir__cfg_entry_of(t, "acme", &e) ? e.line : c->line;
    if (strcmp(c->acme, "letsencrypt") == 0 || strcmp(c->acme, "letsencrypt-staging") == 0) {
        char *u = strdup(strcmp(c->acme, "letsencrypt") == 0 ? LETSENCRYPT : LETSENCRYPT_STAGING);
        free(c->acme);
        c->acme = u;
    } else if (strncmp(c->acme, "https://", 8) != 0) {
        weir__cfg_err_at(ld, at,
                         "[%s] acme is \"letsencrypt\", \"letsencrypt-staging\" or an https:// "
                         "directory URL",
                         section);
    }
    if (c->cert || c->key)
        weir__cfg_err_at(ld, c->cert ? c->cert_line : c->key_line,
                         "[%s]: 'acme' certificates are obtained by weir: no 'cert' or 'key'",
                         section);
    if (c->n_domains == 0)
        weir__cfg_err_at(ld, at, "[%s]: 'acme' needs 'domains' (the names to order)", section);
    bool present;
    c->dns_hook = weir__cfg_dup_string(ld, t, "dns_hook", section, &present);
    char *ch = weir__cfg_dup_string(ld, t, "challenge", section, &present);
    int ch_line = weir__cfg_entry_of(t, "challenge", &e) ? e.line : at;
    if (ch && strcmp(ch, "tls-alpn-01") == 0)
        c->tls_alpn = true;
    else if (ch && strcmp(ch, c->dns_hook ? "dns-01" : "http-01") != 0)
        weir__cfg_err_at(ld, ch_line,
                         c->dns_hook ? "'challenge' in [%s] is '%s': with dns_hook the challenge "
                                       "is \"dns-01\""
                                     : "'challenge' in [%s] is '%s': expected \"http-01\" "
                                       "(default), \"tls-alpn-01\" or, with dns_hook, \"dns-01\"",
                         section, ch);
    if (c->tls_alpn && c->dns_hook)
        weir__cfg_err_at(ld, ch_line, "[%s]: with dns_hook the challenge is \"dns-01\"", section);
    free(ch);
    if (c->dns_hook && access(c->dns_hook, X_OK) != 0)
        weir__cfg_err_at(ld, weir__cfg_entry_of(t, "dns_hook", &e) ? e.line : at,
                         "[%s]: dns_hook %s is not an executable file", section, c->dns_hook);
    for (size_t i = 0; i < c->n_domains; i++) {
        const char *d = c->domains[i];
        /* A wildcard needs DNS-01: one leading "*." label. */
        const char *base = c->dns_hook && strncmp(d, "*.", 2) == 0 ? d + 2 : d;
        bool ok = base[0] && strlen(d) <= 253 && !strchr(base, '*');
        for (const char *p = base; ok && *p; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
                 (*p >= 'A' && *p <= 'Z');
        if (!ok)
            weir__cfg_err_at(ld, at,
                             "[%s]: domain '%s' cannot be ordered (a DNS name; a wildcard "
                             "\"*.NAME\" only with dns_hook)",
                             section, d);
    }
    c->email = weir__cfg_dup_string(ld, t, "email", section, &present);
    c->storage = weir__cfg_dup_string(ld, t, "storage", section, &present);
    if (!c->storage)
        c->storage = strdup(DEFAULT_ACME_STORAGE);
    c->acme_ca = weir__cfg_dup_string(ld, t, "acme_ca", section, &present);
    if (c->acme_ca && !file_exists(c->acme_ca))
        weir__cfg_err_at(ld, weir__cfg_entry_of(t, "acme_ca", &e) ? e.line : at,
                         "[%s]: acme_ca %s cannot be read", section, c->acme_ca);
    char *kt = weir__cfg_dup_string(ld, t, "key_type", section, &present);
    weir_acme_key_type type = WEIR_ACME_EC256;
    if (kt && weir__acme_key_type(kt, &type) != 0)
        weir__cfg_err_at(ld, weir__cfg_entry_of(t, "key_type", &e) ? e.line : at,
                         "'key_type' in [%s] is '%s': expected \"ec256\", \"ec384\", \"rsa2048\" "
                         "or \"rsa4096\"",
                         section, kt);
    free(kt);
    c->key_type = (int)type;
    weir__cfg_get_duration(ld, t, "renew_before", section, 49ull * 24 * 3600 * 1000, false,
                           &c->renew_before_ms);
    if (!c->storage || asprintf(&c->acme_cert, "%s/%s.crt", c->storage, c->name) < 0 ||
        asprintf(&c->acme_key, "%s/%s.key", c->storage, c->name) < 0) {
        weir__cfg_err_at(ld, at, "out of memory");
        return;
    }
    if (c->n_domains && !weir__acme_placeholder((const char *const *)c->domains, c->n_domains,
                                                &c->placeholder_cert, &c->placeholder_key))
        weir__cfg_err_at(ld, at, "[%s]: cannot make its temporary certificate", section);
}

void weir__cfg_load_cert_section(loader *ld, weir_cfg_cert *c, const weir_toml_value *t)
{
    char section[300];
    snprintf(section, sizeof(section), "certificates.%s", c->name);
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] must be a table", section);
        return;
    }
    weir__cfg_check_keys(ld, t, section, weir__cfg_keys_cert);
    bool present;
    c->cert = weir__cfg_dup_string(ld, t, "cert", section, &present);
    c->key = weir__cfg_dup_string(ld, t, "key", section, &present);
    c->chain = weir__cfg_dup_string(ld, t, "chain", section, &present);
    weir_toml_entry e;
    c->cert_line = weir__cfg_entry_of(t, "cert", &e) ? e.line : c->line;
    c->key_line = weir__cfg_entry_of(t, "key", &e) ? e.line : c->line;
    c->chain_line = weir__cfg_entry_of(t, "chain", &e) ? e.line : c->line;
    int line = c->line;
    c->domains = weir__cfg_get_string_list(ld, t, "domains", section, &c->n_domains, &line);
    if (c->domains && !weir__cfg_split_commas(&c->domains, &c->n_domains))
        weir__cfg_err_at(ld, line, "out of memory");
    weir__cfg_get_bool(ld, t, "default", section, &c->is_default);
    c->acme = weir__cfg_dup_string(ld, t, "acme", section, &present);
    if (c->acme) {
        load_acme(ld, c, t, section);
        return;
    }
    if (c->cert)
        c->not_after = weir__acme_cert_not_after(c->cert);
    if (!c->cert)
        weir__cfg_err_at(ld, c->line, "[%s] needs 'cert' (a PEM certificate file) or 'acme'",
                         section);
    if (!c->key)
        weir__cfg_err_at(ld, c->line, "[%s] needs 'key' (a PEM private key file) or 'acme'",
                         section);
}

weir_cfg_cert *weir__cfg_find_cert(loader *ld, const char *name, int line, const char *section)
{
    weir_config *cfg = ld->cfg;
    for (size_t i = 0; i < cfg->n_certs; i++) {
        if (strcmp(cfg->certs[i].name, name) == 0)
            return &cfg->certs[i];
    }
    const char *known[64] = {0};
    for (size_t k = 0; k < cfg->n_certs && k < 63; k++)
        known[k] = cfg->certs[k].name;
    const char *sg = weir__cfg_suggest(name, known);
    weir__cfg_err_at(ld, line, "[%s] refers to undefined certificate '%s'%s%s%s", section, name,
                     sg ? "; did you mean '" : "", sg ? sg : "", sg ? "'?" : "");
    return NULL;
}

/*
 * Every [certificates.NAME] is read and checked at load (files readable, the
 * key matching the certificate), also one that no server lists: an unused
 * or client-only certificate with a bad file must fail -t, not the reload
 * that starts using it. A server checks the ones it lists with its own TLS
 * settings (load_server_tls), so those are left to it. This runs before the
 * upstreams and servers are loaded (`servers` is the raw [servers] section)
 * so that a bad client certificate is reported once, here at its file's
 * line, and not again by the upstream using it.
 */
void weir__cfg_check_unlisted_certs(loader *ld, const weir_toml_value *servers)
{
    weir_config *cfg = ld->cfg;
    for (size_t i = 0; i < cfg->n_certs; i++) {
        weir_cfg_cert *c = &cfg->certs[i];
        bool listed = false;
        for (size_t k = 0; !listed && k < weir_toml_table_count(servers); k++) {
            weir_toml_entry e;
            weir_toml_table_entry(servers, k, &e);
            const weir_toml_value *v = weir_toml_table_get(e.value, "certificates");
            bool is_list = v && weir_toml_type_of(v) == WEIR_TOML_ARRAY;
            size_t n = is_list ? weir_toml_array_count(v) : v != NULL;
            for (size_t j = 0; !listed && j < n; j++) {
                const char *name = weir_toml_string(is_list ? weir_toml_array_at(v, j) : v, NULL);
                listed = name && strcmp(name, c->name) == 0;
            }
        }
        if (listed || !c->cert || !c->key)
            continue; /* its server checks it; or 'cert'/'key' is missing, already an error */
        weir_cfg_cert *one[] = {c};
        weir_cfg_tls tls = {.certs = one, .n_certs = 1};
        weir_tls_server_spec spec;
        if (weir__cfg_tls_spec(&tls, &spec) < 0)
            return;
        char err[512];
        weir_tls_server *check = weir_tls_server_new(&spec, err, sizeof(err));
        weir__cfg_tls_spec_free(&spec);
        if (!check) {
            /* The message names the file at fault ("key file K", "private key
             * in K", "the key in K" for the key): point at its line. */
            int at = c->cert_line;
            if (strstr(err, c->key) && strstr(err, "key "))
                at = c->key_line;
            else if (c->chain && strstr(err, c->chain))
                at = c->chain_line;
            weir__cfg_err_at(ld, at, "[certificates.%s]: TLS: %s", c->name, err);
        }
        weir_tls_server_free(check);
    }
}

int weir__cfg_tls_spec(const weir_cfg_tls *t, weir_tls_server_spec *out)
{
    weir_tls_cert_spec *certs = calloc(t->n_certs ? t->n_certs : 1, sizeof(*certs));
    if (!certs)
        return WEIR_ERR_NOMEM;
    for (size_t i = 0; i < t->n_certs; i++) {
        const weir_cfg_cert *c = t->certs[i];
        /* An acme certificate: its files once obtained, else the
         * temporary one (decided at each build: a new certificate is
         * picked up by rebuilding the servers' TLS). */
        bool obtained = c->acme && file_exists(c->acme_cert) && file_exists(c->acme_key);
        certs[i] =
            (weir_tls_cert_spec){.cert_file = c->acme ? (obtained ? c->acme_cert : NULL) : c->cert,
                                 .key_file = c->acme ? (obtained ? c->acme_key : NULL) : c->key,
                                 .cert_pem = c->acme && !obtained ? c->placeholder_cert : NULL,
                                 .key_pem = c->acme && !obtained ? c->placeholder_key : NULL,
                                 .chain_file = c->chain,
                                 .names = (const char *const *)c->domains,
                                 .n_names = c->n_domains};
    }
    *out = (weir_tls_server_spec){.certs = certs,
                                  .n_certs = t->n_certs,
                                  .default_cert = t->default_cert,
                                  .min_version = t->min_version,
                                  .ciphers = t->ciphers,
                                  .ciphersuites = t->ciphersuites,
                                  .alpn = t->alpn,
                                  .no_tickets = t->no_tickets,
                                  .client_ca_file = t->client_ca,
                                  .client_verify_optional = t->client_verify_optional};
    return WEIR_OK;
}

void weir__cfg_tls_spec_free(weir_tls_server_spec *spec)
{
    free((void *)spec->certs);
    spec->certs = NULL;
}

/* The server's TLS keys; checks the whole set by building it once. */
void weir__cfg_load_server_tls(loader *ld, weir_cfg_server *s, const weir_toml_value *t,
                               const char *section)
{
    weir_cfg_tls *tls = &s->tls;
    size_t n = 0;
    int line = s->line;
    char **names = weir__cfg_get_string_list(ld, t, "certificates", section, &n, &line);
    if (names) {
        tls->certs = calloc(n ? n : 1, sizeof(*tls->certs));
        for (size_t i = 0; tls->certs && i < n; i++) {
            weir_cfg_cert *c = weir__cfg_find_cert(ld, names[i], line, section);
            if (!c)
                continue;
            if (c->is_default) {
                for (size_t k = 0; k < tls->n_certs; k++) {
                    if (tls->certs[k] && tls->certs[k]->is_default)
                        weir__cfg_err_at(
                            ld, line,
                            "[%s] lists two default certificates, '%s' and '%s'; mark one", section,
                            tls->certs[k]->name, c->name);
                }
                tls->default_cert = tls->n_certs;
            }
            tls->certs[tls->n_certs++] = c;
        }
        weir__cfg_free_list(names, n);
        if (n == 0)
            weir__cfg_err_at(ld, line, "'certificates' in [%s] is empty", section);
    }
    bool on = names != NULL;
    weir_toml_entry e;
    static const char *const tls_only[] = {
        "tls_min_version",       "tls_ciphers", "tls_ciphersuites", "tls_session_tickets",
        "tls_handshake_timeout", "client_ca",   "client_verify",    "alpn"};
    for (size_t i = 0; !on && i < sizeof(tls_only) / sizeof(tls_only[0]); i++) {
        if (weir__cfg_entry_of(t, tls_only[i], &e))
            weir__cfg_err_at(ld, e.line, "'%s' in [%s] needs 'certificates' (TLS)", tls_only[i],
                             section);
    }
    bool present;
    char *v = weir__cfg_dup_string(ld, t, "tls_min_version", section, &present);
    tls->min_version = 12;
    if (v) {
        weir__cfg_entry_of(t, "tls_min_version", &e);
        if (strcmp(v, "1.2") == 0)
            tls->min_version = 12;
        else if (strcmp(v, "1.3") == 0)
            tls->min_version = 13;
        else
            weir__cfg_err_at(ld, e.line,
                             "'tls_min_version' in [%s] is '%s': expected \"1.2\" or \"1.3\"",
                             section, v);
        free(v);
    }
    tls->ciphers = weir__cfg_dup_string(ld, t, "tls_ciphers", section, &present);
    tls->ciphersuites = weir__cfg_dup_string(ld, t, "tls_ciphersuites", section, &present);
    bool tickets = true;
    weir__cfg_get_bool(ld, t, "tls_session_tickets", section, &tickets);
    tls->no_tickets = !tickets;
    tls->client_ca = weir__cfg_dup_string(ld, t, "client_ca", section, &present);
    tls->client_ca_line = weir__cfg_entry_of(t, "client_ca", &e) ? e.line : s->line;
    v = weir__cfg_dup_string(ld, t, "client_verify", section, &present);
    if (v) {
        weir__cfg_entry_of(t, "client_verify", &e);
        if (strcmp(v, "optional") == 0)
            tls->client_verify_optional = true;
        else if (strcmp(v, "require") != 0)
            weir__cfg_err_at(ld, e.line,
                             "'client_verify' in [%s] is '%s': expected \"require\" or "
                             "\"optional\"",
                             section, v);
        if (!tls->client_ca)
            weir__cfg_err_at(ld, e.line, "'client_verify' in [%s] needs 'client_ca'", section);
        free(v);
    }
    size_t n_alpn = 0;
    int alpn_line = s->line;
    char **alpn = weir__cfg_get_string_list(ld, t, "alpn", section, &n_alpn, &alpn_line);
    char buf[128] = "";
    bool tcp = s->protocol == WEIR_CFG_TCP;
    for (size_t i = 0; i < n_alpn; i++) {
        if (tcp && (alpn[i][0] == '\0' || strlen(alpn[i]) > 64 || strchr(alpn[i], ',')))
            weir__cfg_err_at(ld, alpn_line,
                             "'alpn' in [%s] offers '%s': a protocol name of 1 to 64 "
                             "characters, no commas",
                             section, alpn[i]);
        else if (!tcp && strcmp(alpn[i], "h2") != 0 && strcmp(alpn[i], "http/1.1") != 0)
            weir__cfg_err_at(ld, alpn_line,
                             "'alpn' in [%s] offers '%s': expected \"h2\" or \"http/1.1\"", section,
                             alpn[i]);
        else if (strlen(buf) + strlen(alpn[i]) + 2 < sizeof(buf))
            snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", buf[0] ? "," : "",
                     alpn[i]);
    }
    if (alpn && n_alpn == 0)
        weir__cfg_err_at(ld, alpn_line, "'alpn' in [%s] is empty", section);
    weir__cfg_free_list(alpn, n_alpn);
    /* A TCP server offers only what it is told to (none by default: the
     * client's choice goes unanswered). */
    if (on && !(tls->alpn = strdup(buf[0] || tcp ? buf : "h2,http/1.1")))
        return;
    if (tcp)
        return; /* the rest is HTTP's */
    weir__cfg_get_bool(ld, t, "h2c", section, &s->opts.h2c);
    int64_t streams;
    if (weir__cfg_get_int(ld, t, "h2_max_concurrent_streams", section, 1, 10000, &streams))
        s->opts.h2_max_concurrent_streams = (uint32_t)streams;

    weir__cfg_get_bool(ld, t, "redirect_https", section, &s->redirect_https);
    int64_t port = 443;
    if (weir__cfg_get_int(ld, t, "https_port", section, 1, 65535, &port) && !s->redirect_https) {
        weir__cfg_entry_of(t, "https_port", &e);
        weir__cfg_err_at(ld, e.line, "'https_port' in [%s] needs 'redirect_https = true'", section);
    }
    s->https_port = (uint32_t)port;
    if (s->redirect_https && on) {
        weir__cfg_entry_of(t, "redirect_https", &e);
        weir__cfg_err_at(ld, e.line,
                         "'redirect_https' in [%s] is for a plain server, not a TLS one", section);
    }
    if (s->redirect_https &&
        !(s->redirect = weir__plugin_builtin(&weir__plugin_redirect, section,
                                             weir__plugin_redirect_https(s->https_port))))
        weir__cfg_err_at(ld, s->line, "out of memory");

    /* Every file read and checked now, so that a bad one is a config error
     * and not a failure at the first handshake. */
    bool files = true;
    for (size_t i = 0; i < tls->n_certs; i++)
        files = files && tls->certs[i]->cert && tls->certs[i]->key;
    if (on && tls->n_certs == n && n > 0 && files) {
        weir_tls_server_spec spec;
        if (weir__cfg_tls_spec(tls, &spec) < 0)
            return;
        char err[512];
        weir_tls_server *check = weir_tls_server_new(&spec, err, sizeof(err));
        weir__cfg_tls_spec_free(&spec);
        if (!check) {
            /* The message names the file at fault: point at its line. */
            int at = line;
            if (tls->client_ca && strstr(err, tls->client_ca))
                at = tls->client_ca_line;
            for (size_t i = 0; i < tls->n_certs; i++) {
                const weir_cfg_cert *c = tls->certs[i];
                if (c->chain && strstr(err, c->chain))
                    at = c->chain_line;
                else if (strstr(err, c->key) && !strstr(err, c->cert))
                    at = c->key_line;
                else if (strstr(err, c->cert))
                    at = strstr(err, "key") && strstr(err, c->key) ? c->key_line : c->cert_line;
            }
            weir__cfg_err_at(ld, at, "[%s]: TLS: %s", section, err);
        }
        weir_tls_server_free(check);
    }
}
