/*
 * tls.c - TLS settings on OpenSSL 3 (see weir/tls.h and tls.h).
 *
 * Server side: one SSL_CTX per version of the settings. The default
 * certificate is the context's own; the servername callback swaps in the
 * certificate whose names match the client's SNI on the SSL object itself
 * (SSL_use_cert_and_key), so every certificate shares the context's
 * session cache and ticket keys. The certificate table hangs off the
 * context (ex_data) and dies with it, after the last connection using it.
 *
 * Client side: one SSL_CTX per weir_tls_client, and a table of the last
 * session each backend (address + SNI) gave us, filled by the new-session
 * callback and offered on the next connection to that backend.
 */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "net/sock.h"

#define DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1"
#define SESSION_BUCKETS 64
#define SESSION_MAX 4096

/* ---- errors ---- */

static void set_err(char *err, size_t len, const char *fmt, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char reason[200] = "";
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    snprintf(err, len, fmt, what);
    size_t n = strlen(err);
    if (reason[0] && n + 3 < len)
        snprintf(err + n, len - n, ": %s", reason);
}

const char *weir__tls_describe(SSL *ssl, int err, char *buf, size_t len)
{
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = ERR_peek_last_error();
    if (vr != X509_V_OK && e && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    } else if (e) {
        const char *r = ERR_reason_error_string(e);
        snprintf(buf, len, "%s", r ? r : "TLS error");
    } else if (err == SSL_ERROR_SYSCALL) {
        snprintf(buf, len, "%s",
                 errno ? strerror(errno) : "connection closed during the handshake");
    } else if (err == SSL_ERROR_ZERO_RETURN) {
        snprintf(buf, len, "peer closed the TLS session");
    } else {
        snprintf(buf, len, "TLS error %d", err);
    }
    ERR_clear_error();
    return buf;
}

weir_str weir__tls_alpn(SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return (weir_str){(const char *)p, p ? n : 0};
}

/* "h2,http/1.1" -> ALPN wire format (length-prefixed). Returns the length
 * or -1 for an empty or over-long protocol name. */
bool weir__tls_info(SSL *ssl, weir_tls_info *out)
{
    if (!ssl) {
        memset(out, 0, sizeof(*out));
        return false;
    }
    out->version = SSL_get_version(ssl);
    out->cipher = SSL_get_cipher_name(ssl);
    out->sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    out->alpn = weir__tls_alpn(ssl);
    out->resumed = SSL_session_reused(ssl);
    X509 *peer = SSL_get0_peer_certificate(ssl);
    out->client_verified = peer && SSL_get_verify_result(ssl) == X509_V_OK;
    return true;
}

static int alpn_wire(const char *list, unsigned char *out, size_t cap)
{
    size_t n = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        while (l > 0 && *p == ' ')
            p++, l--;
        while (l > 0 && p[l - 1] == ' ')
            l--;
        if (l == 0 || l > 255 || n + 1 + l > cap)
            return -1;
        out[n++] = (unsigned char)l;
        memcpy(out + n, p, l);
        n += l;
        p = e ? e + 1 : p + l;
        if (!e)
            break;
    }
    return n ? (int)n : -1;
}

/* ---- certificates ---- */

typedef struct cert {
    X509 *x509;
    EVP_PKEY *key;
    STACK_OF(X509) * chain;
    char **names;
    size_t n_names;
} cert;

typedef struct cert_table {
    cert *v;
    size_t n;
    size_t def;
    unsigned char alpn[128];
    int alpn_len;
} cert_table;

static void free_table(cert_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; t->v && i < t->n; i++) {
        X509_free(t->v[i].x509);
        EVP_PKEY_free(t->v[i].key);
        sk_X509_pop_free(t->v[i].chain, X509_free);
        for (size_t k = 0; k < t->v[i].n_names; k++)
            free(t->v[i].names[k]);
        free(t->v[i].names);
    }
    free(t->v);
    free(t);
}

static int table_index = -1;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static int key_index = -1;

static void free_table_ex(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    free_table(ptr);
}

static void free_key_ex(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

static void make_indexes(void)
{
    table_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_table_ex);
    key_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_key_ex);
}

static int add_name(cert *c, const char *name, size_t len)
{
    while (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0)
        return 0;
    char **nv = realloc(c->names, (c->n_names + 1) * sizeof(*nv));
    if (!nv)
        return -1;
    c->names = nv;
    if (!(nv[c->n_names] = strndup(name, len)))
        return -1;
    c->n_names++;
    return 0;
}

/* The certificate's DNS subjectAltNames, or its CN when it has none. */
static int names_from_cert(cert *c)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(c->x509, NID_subject_alt_name, NULL, NULL);
    int rc = 0;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && rc == 0; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        rc = add_name(c, (const char *)d, (size_t)ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(sans);
    if (rc == 0 && c->n_names == 0) {
        X509_NAME *subj = X509_get_subject_name(c->x509);
        int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
        if (i >= 0) {
            ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
            rc = add_name(c, (const char *)ASN1_STRING_get0_data(cn),
                          (size_t)ASN1_STRING_length(cn));
        }
    }
    return rc;
}

/* Reads every certificate of a PEM file: the first into *leaf (if leaf is
 * not NULL), the rest onto chain. */
static int read_certs(const char *file, const char *pem, X509 **leaf, STACK_OF(X509) * chain,
                      char *err, size_t err_len)
{
    BIO *b = file ? BIO_new_file(file, "r") : BIO_new_mem_buf(pem, -1);
    if (!file)
        file = "(in memory)";
    if (!b) {
        set_err(err, err_len, "cannot read certificate file %s", file);
        return -1;
    }
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        if (n++ == 0 && leaf)
            *leaf = x;
        else if (!sk_X509_push(chain, x))
            X509_free(x);
    }
    /* The loop ends on "no more PEM data", which is not an error. */
    unsigned long e = ERR_peek_last_error();
    if (e && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
        ERR_clear_error();
    BIO_free(b);
    if (n == 0 || ERR_peek_last_error()) {
        set_err(err, err_len, "no valid PEM certificate in %s", file);
        return -1;
    }
    return 0;
}

static int load_cert(cert *c, const weir_tls_cert_spec *s, char *err, size_t err_len)
{
    c->chain = sk_X509_new_null();
    if (!c->chain || read_certs(s->cert_file, s->cert_pem, &c->x509, c->chain, err, err_len) < 0)
        return -1;
    if (s->chain_file && read_certs(s->chain_file, NULL, NULL, c->chain, err, err_len) < 0)
        return -1;
    const char *key_name = s->cert_file ? s->key_file : "(in memory)";
    BIO *b = s->cert_file ? BIO_new_file(s->key_file, "r") : BIO_new_mem_buf(s->key_pem, -1);
    if (!b) {
        set_err(err, err_len, "cannot read key file %s", key_name);
        return -1;
    }
    c->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!c->key) {
        set_err(err, err_len, "no valid PEM private key in %s", key_name);
        return -1;
    }
    if (!X509_check_private_key(c->x509, c->key)) {
        set_err(err, err_len, "the key in %s does not match its certificate", key_name);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < s->n_names && rc == 0; i++)
        rc = add_name(c, s->names[i], strlen(s->names[i]));
    if (s->n_names == 0)
        rc = names_from_cert(c);
    if (rc < 0)
        snprintf(err, err_len, "out of memory");
    return rc;
}

/* "x.example" matches "x.example" and "*.example" (one label only). */
static bool name_matches(const char *pattern, const char *name)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(name, '.');
        return dot && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return strcasecmp(pattern, name) == 0;
}

static const cert *lookup(const cert_table *t, const char *name)
{
    const cert *wild = NULL;
    for (size_t i = 0; i < t->n; i++) {
        for (size_t k = 0; k < t->v[i].n_names; k++) {
            const char *p = t->v[i].names[k];
            if (p[0] == '*') {
                if (!wild && name_matches(p, name))
                    wild = &t->v[i];
            } else if (strcasecmp(p, name) == 0) {
                return &t->v[i]; /* an exact name wins over any wildcard */
            }
        }
    }
    return wild;
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    const cert_table *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || weir__tls_alpn01_marked(ssl))
        return SSL_TLSEXT_ERR_OK; /* a TLS-ALPN-01 check has its certificate */
    const cert *c = lookup(t, name);
    if (c && c != &t->v[t->def] && !SSL_use_cert_and_key(ssl, c->x509, c->key, c->chain, 1)) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    const cert_table *t = arg;
    unsigned char *sel;
    if (weir__tls_alpn01_marked(ssl)) {
        static const unsigned char acme[] = "\x0a"
                                            "acme-tls/1";
        if (SSL_select_next_proto(&sel, outlen, acme, sizeof(acme) - 1, in, inlen) !=
            OPENSSL_NPN_NEGOTIATED)
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    if (!t->alpn_len)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_select_next_proto(&sel, outlen, t->alpn, (unsigned)t->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no common protocol: go on without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/*
 * OpenSSL works out a certificate's extensions (key identifiers, purpose
 * flags) on its first use and caches them in the X509; two workers
 * verifying against the same CA at once both write that cache (a data
 * race TSan reports, OpenSSL issue 32609). Doing it once here, while the
 * context is built on one thread, leaves the workers only reading.
 */
static void warm_store(SSL_CTX *ctx)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_OBJECT) *objs = store ? X509_STORE_get0_objects(store) : NULL;
    for (int i = 0; objs && i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (x)
            X509_check_purpose(x, -1, 0);
    }
}

static int set_versions(SSL_CTX *ctx, int min_version, char *err, size_t err_len)
{
    if (min_version != 0 && min_version != 12 && min_version != 13) {
        snprintf(err, err_len, "unsupported TLS minimum version %d (12 or 13)", min_version);
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    return 0;
}

static SSL_CTX *server_ctx(const weir_tls_server_spec *spec, char *err, size_t err_len)
{
    pthread_once(&index_once, make_indexes);
    if (spec->n_certs == 0 || spec->default_cert >= spec->n_certs) {
        snprintf(err, err_len, "a TLS server needs a certificate");
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    cert_table *t = calloc(1, sizeof(*t));
    if (!ctx || !t || !(t->v = calloc(spec->n_certs, sizeof(*t->v)))) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    /* From here the context owns the table. */
    SSL_CTX_set_ex_data(ctx, table_index, t);
    if (set_versions(ctx, spec->min_version, err, err_len) < 0)
        goto fail_ctx;
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION |
                                 (spec->no_tickets ? SSL_OP_NO_TICKET : 0));
    /* RELEASE_BUFFERS: an idle connection gives OpenSSL's 34 KiB of record
     * buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (!SSL_CTX_set_cipher_list(ctx, spec->ciphers ? spec->ciphers : DEFAULT_CIPHERS)) {
        set_err(err, err_len, "invalid TLS cipher list '%s'", spec->ciphers ? spec->ciphers : "");
        goto fail_ctx;
    }
    if (spec->ciphersuites && !SSL_CTX_set_ciphersuites(ctx, spec->ciphersuites)) {
        set_err(err, err_len, "invalid TLS 1.3 ciphersuites '%s'", spec->ciphersuites);
        goto fail_ctx;
    }
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"weir", 4);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20480);
    if (spec->no_tickets)
        SSL_CTX_set_num_tickets(ctx, 0);

    t->n = spec->n_certs;
    t->def = spec->default_cert;
    for (size_t i = 0; i < spec->n_certs; i++) {
        if (load_cert(&t->v[i], &spec->certs[i], err, err_len) < 0)
            goto fail_ctx;
    }
    const cert *d = &t->v[t->def];
    if (!SSL_CTX_use_cert_and_key(ctx, d->x509, d->key, d->chain, 1)) {
        set_err(err, err_len, "cannot use certificate %s", spec->certs[t->def].cert_file);
        goto fail_ctx;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);

    /* "" offers nothing: a client's ALPN goes unanswered (TCP services). */
    t->alpn_len = spec->alpn && !spec->alpn[0]
                      ? 0
                      : alpn_wire(spec->alpn ? spec->alpn : "http/1.1", t->alpn, sizeof(t->alpn));
    if (t->alpn_len < 0) {
        snprintf(err, err_len, "invalid ALPN protocol list '%s'", spec->alpn);
        goto fail_ctx;
    }
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, t); /* acme-tls/1 too, with no ALPN list */
    SSL_CTX_set_client_hello_cb(ctx, weir__tls_alpn01_hello, NULL);
    SSL_CTX_set_tlsext_status_cb(ctx, weir__tls_ocsp_status);

    if (spec->client_ca_file) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(spec->client_ca_file);
        if (!names || !SSL_CTX_load_verify_locations(ctx, spec->client_ca_file, NULL)) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            set_err(err, err_len, "cannot load client CA file %s", spec->client_ca_file);
            goto fail_ctx;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        warm_store(ctx);
        SSL_CTX_set_verify(ctx,
                           SSL_VERIFY_PEER |
                               (spec->client_verify_optional ? 0 : SSL_VERIFY_FAIL_IF_NO_PEER_CERT),
                           NULL);
    }
    return ctx;

fail:
    free_table(t);
fail_ctx:
    SSL_CTX_free(ctx);
    return NULL;
}

struct weir_tls_server {
    pthread_mutex_t lock; /* guards ctx: held to swap it or take a reference */
    SSL_CTX *ctx;
};

weir_tls_server *weir_tls_server_new(const weir_tls_server_spec *spec, char *err, size_t err_len)
{
    SSL_CTX *ctx = server_ctx(spec, err, err_len);
    if (!ctx)
        return NULL;
    weir_tls_server *t = calloc(1, sizeof(*t));
    if (!t) {
        SSL_CTX_free(ctx);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    t->ctx = ctx;
    return t;
}

int weir_tls_server_update(weir_tls_server *t, const weir_tls_server_spec *spec, char *err,
                           size_t err_len)
{
    SSL_CTX *ctx = server_ctx(spec, err, err_len);
    if (!ctx)
        return WEIR_ERR_INVAL;
    pthread_mutex_lock(&t->lock);
    /* Same ticket keys: tickets issued under the old settings still resume. */
    unsigned char keys[80];
    if (SSL_CTX_get_tlsext_ticket_keys(t->ctx, keys, sizeof(keys)) == 1)
        SSL_CTX_set_tlsext_ticket_keys(ctx, keys, sizeof(keys));
    OPENSSL_cleanse(keys, sizeof(keys));
    SSL_CTX *old = t->ctx;
    t->ctx = ctx;
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old); /* connections using it hold their own references */
    return WEIR_OK;
}

void weir_tls_server_free(weir_tls_server *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

SSL *weir__tls_server_ssl(weir_tls_server *t)
{
    pthread_mutex_lock(&t->lock);
    SSL *ssl = SSL_new(t->ctx);
    pthread_mutex_unlock(&t->lock);
    if (ssl)
        SSL_set_accept_state(ssl);
    return ssl;
}

/* ---- client ---- */

typedef struct cached_session {
    struct cached_session *next;
    SSL_SESSION *sess;
    char key[];
} cached_session;

struct weir_tls_client {
    SSL_CTX *ctx;
    uint64_t id;
    bool verify;
    pthread_mutex_t lock; /* guards the session table */
    cached_session *sessions[SESSION_BUCKETS];
    size_t n_sessions;
};

static _Atomic uint64_t next_client_id = 1;

static uint32_t key_hash(const char *k)
{
    uint32_t h = 2166136261u;
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 16777619u;
    return h % SESSION_BUCKETS;
}

/* A backend handed out a session: keep a copy of the latest per backend.
 * A copy, not OpenSSL's object: that one stays the connection's own (a
 * later ticket on it duplicates and replaces it), so no SSL_SESSION is
 * ever shared by two workers; the cache's copies are touched only under
 * the lock. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    weir_tls_client *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const char *key = SSL_get_ex_data(ssl, key_index);
    if (!c || !key)
        return 0;
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    if (!copy)
        return 0;
    uint32_t b = key_hash(key);
    pthread_mutex_lock(&c->lock);
    cached_session *e = c->sessions[b];
    while (e && strcmp(e->key, key) != 0)
        e = e->next;
    if (e) {
        SSL_SESSION_free(e->sess);
        e->sess = copy;
        copy = NULL;
    } else if (c->n_sessions < SESSION_MAX && (e = malloc(sizeof(*e) + strlen(key) + 1))) {
        strcpy(e->key, key);
        e->sess = copy;
        e->next = c->sessions[b];
        c->sessions[b] = e;
        c->n_sessions++;
        copy = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    SSL_SESSION_free(copy); /* not kept (the table full) */
    return 0;               /* OpenSSL keeps its reference */
}

weir_tls_client *weir_tls_client_new(const weir_tls_client_spec *spec, char *err, size_t err_len)
{
    pthread_once(&index_once, make_indexes);
    weir_tls_client *c = calloc(1, sizeof(*c));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!c || !ctx) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (set_versions(ctx, spec->min_version, err, err_len) < 0)
        goto fail;
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    c->verify = !spec->no_verify;
    if (c->verify) {
        int ok = spec->ca_file ? SSL_CTX_load_verify_locations(ctx, spec->ca_file, NULL)
                               : SSL_CTX_set_default_verify_paths(ctx);
        if (!ok) {
            set_err(err, err_len, "cannot load CA file %s",
                    spec->ca_file ? spec->ca_file : "(system)");
            goto fail;
        }
        warm_store(ctx);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (spec->cert_file) {
        cert cc = {0};
        weir_tls_cert_spec cs = {.cert_file = spec->cert_file,
                                 .key_file = spec->key_file ? spec->key_file : spec->cert_file,
                                 .chain_file = spec->chain_file};
        int rc = load_cert(&cc, &cs, err, err_len);
        if (rc == 0 && !SSL_CTX_use_cert_and_key(ctx, cc.x509, cc.key, cc.chain, 1)) {
            set_err(err, err_len, "cannot use client certificate %s", spec->cert_file);
            rc = -1;
        }
        X509_free(cc.x509);
        EVP_PKEY_free(cc.key);
        sk_X509_pop_free(cc.chain, X509_free);
        for (size_t k = 0; k < cc.n_names; k++)
            free(cc.names[k]);
        free(cc.names);
        if (rc < 0)
            goto fail;
    }
    unsigned char wire[128];
    int wl = alpn_wire(spec->alpn ? spec->alpn : "http/1.1", wire, sizeof(wire));
    if (wl < 0 || SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)wl) != 0) {
        snprintf(err, err_len, "invalid ALPN protocol list '%s'", spec->alpn);
        goto fail;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    SSL_CTX_set_app_data(ctx, c);
    pthread_mutex_init(&c->lock, NULL);
    c->ctx = ctx;
    c->id = atomic_fetch_add(&next_client_id, 1);
    return c;

fail:
    SSL_CTX_free(ctx);
    free(c);
    return NULL;
}

void weir_tls_client_free(weir_tls_client *c)
{
    if (!c)
        return;
    /* Connections still using the context must not store sessions into a
     * freed client: OpenSSL's context outlives us while they exist. */
    SSL_CTX_set_app_data(c->ctx, NULL);
    SSL_CTX_sess_set_new_cb(c->ctx, NULL);
    for (int b = 0; b < SESSION_BUCKETS; b++) {
        cached_session *e = c->sessions[b];
        while (e) {
            cached_session *next = e->next;
            SSL_SESSION_free(e->sess);
            free(e);
            e = next;
        }
    }
    SSL_CTX_free(c->ctx);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static weir_tls_client *default_client;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void make_default_client(void)
{
    char err[256];
    default_client = weir_tls_client_new(&(weir_tls_client_spec){0}, err, sizeof(err));
    if (!default_client)
        weir_log_error("TLS: default client settings: %s", err);
}

/* The default client lives as long as the process. */
static const weir_tls_client *client_or_default(const weir_tls_client *c)
{
    if (c)
        return c;
    pthread_once(&default_once, make_default_client);
    return default_client;
}

uint64_t weir__tls_client_id(const weir_tls_client *c)
{
    return c ? c->id : 0;
}

static bool is_ip_literal(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

SSL *weir__tls_client_ssl(const weir_tls_client *cc, const weir_peer *peer)
{
    weir_tls_client *c = (weir_tls_client *)client_or_default(cc);
    if (!c)
        return NULL;
    SSL *ssl = SSL_new(c->ctx);
    if (!ssl)
        return NULL;
    SSL_set_connect_state(ssl);
    char addr[WEIR_ADDR_STRLEN];
    weir__addr_format((const struct sockaddr *)&peer->addr, addr, sizeof(addr));
    size_t sni_len = strnlen(peer->sni, sizeof(peer->sni));
    bool have_sni = sni_len > 0 && sni_len < sizeof(peer->sni);
    if (have_sni && !is_ip_literal(peer->sni) && !SSL_set_tlsext_host_name(ssl, peer->sni))
        goto fail;
    if (c->verify) {
        if (have_sni) {
            if (!SSL_set1_host(ssl, peer->sni))
                goto fail;
        } else {
            /* No name: the certificate must be for the address itself. */
            char ip[WEIR_ADDR_STRLEN];
            weir__addr_format_ip((const struct sockaddr *)&peer->addr, ip, sizeof(ip));
            if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip))
                goto fail;
        }
    }
    /* The session-cache key: this backend under this name. */
    size_t kl = strlen(addr) + 1 + (have_sni ? sni_len : 0) + 1;
    char *key = malloc(kl);
    if (!key)
        goto fail;
    snprintf(key, kl, "%s/%s", addr, have_sni ? peer->sni : "");
    SSL_set_ex_data(ssl, key_index, key);
    uint32_t b = key_hash(key);
    pthread_mutex_lock(&c->lock);
    for (cached_session *e = c->sessions[b]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            /* Each connection resumes from its own copy: OpenSSL writes to
             * the session during the handshake, and workers connecting to
             * the same backend at once would share it (a data race). */
            SSL_SESSION *copy = SSL_SESSION_is_resumable(e->sess) ? SSL_SESSION_dup(e->sess) : NULL;
            if (copy) {
                SSL_set_session(ssl, copy);
                SSL_SESSION_free(copy); /* the SSL holds its own reference */
            }
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return ssl;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}

/* ---- counters ---- */

typedef struct counters {
    _Atomic uint64_t v[WEIR_TLS_N_EVENTS];
    _Atomic uint64_t dur[2][WEIR_TLS_BUCKETS], dur_sum[2];
    struct counters *next;
} counters;

const uint32_t weir_tls_bucket_us[WEIR_TLS_BUCKETS - 1] = {
    1000, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000};

static pthread_mutex_t counters_lock = PTHREAD_MUTEX_INITIALIZER;
static counters *all_counters;
static __thread counters *my_counters;

static counters *my_block(void);

/* Only this thread writes its block: no read-modify-write needed. */
static void bump(_Atomic uint64_t *v, uint64_t d)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

void weir__tls_count(weir_tls_event ev)
{
    counters *c = my_block();
    if (c)
        bump(&c->v[ev], 1);
}

void weir__tls_observe_handshake(bool with_client, uint64_t us)
{
    counters *c = my_block();
    if (!c)
        return;
    int side = with_client ? 0 : 1, b = 0;
    while (b < WEIR_TLS_BUCKETS - 1 && us > weir_tls_bucket_us[b])
        b++;
    bump(&c->dur[side][b], 1);
    bump(&c->dur_sum[side], us);
}

static counters *my_block(void)
{
    counters *c = my_counters;
    if (!c) {
        /* One block per thread for the life of the process (threads are
         * few and long-lived: workers, the control thread). */
        if (!(c = calloc(1, sizeof(*c))))
            return NULL;
        pthread_mutex_lock(&counters_lock);
        c->next = all_counters;
        all_counters = c;
        pthread_mutex_unlock(&counters_lock);
        my_counters = c;
    }
    return c;
}

void weir__tls_stats(weir_tls_stats *out)
{
    uint64_t v[WEIR_TLS_N_EVENTS] = {0};
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&counters_lock);
    for (counters *c = all_counters; c; c = c->next) {
        for (int i = 0; i < WEIR_TLS_N_EVENTS; i++)
            v[i] += atomic_load_explicit(&c->v[i], memory_order_relaxed);
        for (int side = 0; side < 2; side++) {
            for (int b = 0; b < WEIR_TLS_BUCKETS; b++)
                out->duration[side][b] +=
                    atomic_load_explicit(&c->dur[side][b], memory_order_relaxed);
            out->duration_sum_us[side] +=
                atomic_load_explicit(&c->dur_sum[side], memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&counters_lock);
    weir_tls_stats d = *out;
    *out = (weir_tls_stats){
        .handshakes = v[WEIR_TLS_HANDSHAKE],
        .resumed = v[WEIR_TLS_RESUMED],
        .failures = v[WEIR_TLS_FAILURE],
        .up_handshakes = v[WEIR_TLS_UP_HANDSHAKE],
        .up_resumed = v[WEIR_TLS_UP_RESUMED],
        .up_failures = v[WEIR_TLS_UP_FAILURE],
    };
    memcpy(out->duration, d.duration, sizeof(d.duration));
    memcpy(out->duration_sum_us, d.duration_sum_us, sizeof(d.duration_sum_us));
}
