/*
 * config.h - the weir configuration: a validated, immutable snapshot built
 * from one TOML file.
 *
 * A snapshot is built and validated off the request path, then published;
 * requests pin the snapshot current when they start (weir__config_ref) and
 * release it when they end, so a reload can swap snapshots while old
 * requests finish on the old one. A bad file never produces a snapshot:
 * loading reports every error found, as "FILE:LINE: message".
 */
#ifndef WEIR_APP_CONFIG_H
#define WEIR_APP_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/otel/trace.h"
#include "app/route.h"
#include "weir/weir.h"

typedef struct weir_config weir_config;
typedef struct weir_cfg_location weir_cfg_location;
typedef struct weir_cfg_upstream weir_cfg_upstream;
typedef struct weir_cfg_server weir_cfg_server;
typedef struct weir_access_log weir_access_log;

typedef struct weir_tmpl weir_tmpl;
typedef struct weir_plugin weir_plugin;
typedef struct weir_plugin_call weir_plugin_call;
typedef weir_phase_result (*weir_plugin_hook)(weir_plugin_call *c); /* as in plugin/plugin.h */

typedef struct weir_cfg_header {
    char *name;
    char *value;     /* NULL for removals */
    weir_tmpl *tmpl; /* the value's variables (app/vars.h), NULL if it has none */
    size_t name_len, value_len;
} weir_cfg_header;

/* A plugin in a location's chain; slot is its index there, for its
 * per-request memory. */
typedef struct weir_plugin_ref {
    weir_plugin *p;
    weir_plugin_hook hook; /* p's hook for this chain (NULL in the body and logging chains) */
    bool ctx;              /* p has per-request memory (def->ctx_size) */
    uint16_t slot;
} weir_plugin_ref;

typedef struct weir_plugin_chain {
    weir_plugin_ref *v;
    uint16_t n;
} weir_plugin_chain;

/* Chains by step (plugin.h's weir_plugin_step), then the response body
 * and logging hooks. */
#define WEIR_CFG_CHAINS 8
#define WEIR_CFG_CHAIN_RESPONSE_BODY 5
#define WEIR_CFG_CHAIN_LOGGING 6
#define WEIR_CFG_CHAIN_REQUEST_BODY 7

typedef struct weir_cfg_headers {
    weir_cfg_header *v;
    size_t n;
} weir_cfg_headers;

typedef struct weir_cfg_backend {
    char *text;      /* as written: "10.0.0.1:80 weight" or "host:port" */
    weir_peer peer;  /* resolved address */
    uint32_t weight; /* >= 1 */
} weir_cfg_backend;

/* What a consistent-hash upstream hashes. */
typedef enum weir_hash_key {
    WEIR_HASH_NONE,
    WEIR_HASH_IP,     /* client IP */
    WEIR_HASH_URI,    /* path and query */
    WEIR_HASH_PATH,   /* path */
    WEIR_HASH_HEADER, /* a request header's value */
    WEIR_HASH_COOKIE, /* a cookie's value */
    WEIR_HASH_QUERY,  /* a query parameter's value */
} weir_hash_key;

/* [certificates.NAME]: a certificate with its key. */
typedef struct weir_cfg_cert {
    char *name;
    int line;
    char *cert, *key, *chain; /* files; chain may be NULL */
    int cert_line, key_line, chain_line;
    char **domains; /* names it serves; none = from the certificate */
    size_t n_domains;
    bool is_default; /* 'default = true' */
    /* acme: weir obtains and renews the certificate (src/app/acme/). */
    char *acme;                      /* the directory URL; NULL = files */
    char *email, *storage, *acme_ca; /* contact; the directory of the files; the server's CA */
    char *dns_hook; /* DNS-01: the command that adds and removes the TXT records; NULL: HTTP-01 */
    bool tls_alpn;  /* challenge = "tls-alpn-01" */
    int key_type;   /* weir_acme_key_type */
    uint32_t renew_before_ms;                 /* 0: at 2/3 of the lifetime */
    char *acme_cert, *acme_key;               /* STORAGE/NAME.crt, .key */
    char *placeholder_cert, *placeholder_key; /* PEM served until the first certificate */
    int64_t not_after; /* a file certificate's expiry (Unix time), 0: unknown */
} weir_cfg_cert;

/* A server's TLS settings (certificates set = TLS on). */
typedef struct weir_cfg_tls {
    weir_cfg_cert **certs;
    size_t n_certs;
    size_t default_cert;
    int min_version; /* 12 or 13 */
    char *ciphers, *ciphersuites;
    char *alpn; /* "h2,http/1.1" */
    bool no_tickets;
    char *client_ca;
    int client_ca_line;
    bool client_verify_optional;
} weir_cfg_tls;

/* retry_on = [...] of an upstream. */
enum {
    WEIR_CFG_RETRY_CONNECT = 1,
    WEIR_CFG_RETRY_RESET = 2,
    WEIR_CFG_RETRY_TIMEOUT = 4,
    WEIR_CFG_RETRY_502 = 8,
    WEIR_CFG_RETRY_503 = 16,
    WEIR_CFG_RETRY_504 = 32,
    WEIR_CFG_RETRY_NON_IDEMPOTENT = 64, /* timeouts and statuses for any method */
};

struct weir_cfg_upstream {
    char *name;
    int line;
    bool tls;                    /* connect to the backends with TLS */
    bool h2;                     /* HTTP/2 to the backends (alpn = "h2"; h2c without TLS) */
    bool h2_or_h1;               /* alpn = "h2,h1": the backend picks by ALPN (TLS only) */
    uint8_t send_proxy;          /* send_proxy_protocol: 0 none, 1 "v1", 2 "v2" */
    char *sni;                   /* NULL: a backend named by hostname gets that name */
    weir_tls_client *tls_client; /* verification, CA, client cert, ALPN */
    weir_cfg_backend *backends;
    size_t n_backends;
    weir_lb_algo algo;
    weir_hash_key hash_key;
    char *hash_name;                /* header/cookie/query name for those keys */
    char *sticky_cookie;            /* sticky sessions by this cookie, or NULL */
    uint32_t max_retries;           /* other backends tried after a failure [2] */
    uint32_t retry_on;              /* WEIR_CFG_RETRY_* bits [connect, reset, timeout] */
    uint32_t retry_timeout_ms;      /* no new attempt this long after the request began; 0 = none */
    uint32_t max_conns;             /* per backend, pooled idle included; 0 = no limit */
    uint32_t queue_timeout_ms;      /* wait for a connection under max_conns [30000] */
    weir_upstream *lb;              /* the library upstream: members, selection, health */
    weir_health_check hc;           /* active check (hc.kind NONE = none) */
    uint32_t connection_timeout_ms; /* 0 = server/library default */
    uint32_t total_connection_timeout_ms; /* whole set-up incl. TLS handshake; 0 = none */
    uint32_t read_timeout_ms;
    uint32_t write_timeout_ms;
    uint32_t idle_timeout_ms;
    uint32_t keepalive;             /* idle pooled connections per backend per worker */
    uint32_t max_connection_age_ms; /* a backend connection is not reused past it; 0 = no limit */
    uint32_t max_requests;          /* requests per backend connection; 0 = no limit */
    /* discovery = "dns" | "srv": addrs are names the control thread
     * resolves again and again (weir_lookup_dns_new); "static" (0)
     * resolves them once here. */
    int discovery;        /* WEIR_CFG_DISCOVERY_* */
    char *discovery_spec; /* what the lookups ask, as one string: same = same backends */
    weir_dns_options dns; /* names, servers (owned) and the dns_* settings */
    int discovery_line;
};

enum { WEIR_CFG_DISCOVERY_STATIC, WEIR_CFG_DISCOVERY_DNS, WEIR_CFG_DISCOVERY_SRV };

struct weir_cfg_location {
    char *name;
    int line;
    char **hosts;
    size_t n_hosts;
    char *path; /* "", "=...", "~...", "/..." */
    bool has_weight;
    int64_t weight;
    weir_cfg_upstream *upstream; /* NULL when the location answers itself (echo) */
    bool echo;                   /* answer with an echo of the request (tests, demos) */
    struct pcre2_real_code_8 *rewrite_re;
    char *rewrite_repl;
    char *rewrite_text; /* 'rewrite' as written ("REGEX REPLACEMENT"), for GET /api/config */
    weir_cfg_headers proxy_set, proxy_add, proxy_remove;
    weir_cfg_headers resp_set, resp_add, resp_remove;
    bool no_upstream;              /* neither upstream nor echo: a plugin answers */
    uint64_t client_max_body_size; /* 0 = the server's limit */
    bool has_max_body;
    uint32_t connect_timeout_ms, read_timeout_ms, write_timeout_ms; /* 0 = upstream's */
    uint32_t grpc_idle_timeout_ms; /* gRPC requests: idle limit on both sides; 0 = the usual */
    bool has_added;                /* proxy_added_headers was given */
    unsigned added;                /* its WEIR_ADD_* bits (weir/session.h) */
    uint64_t
        request_buffer_bytes; /* request_buffering: bodies up to this are read first; 0 = off */
    uint64_t request_buffer_file_bytes; /* past that, up to this, into a temp file; 0 = off */
    /* router = "resp://HOST:PORT": a RESP server (a weir ring, or
     * redis-server) names each request's backend (balance.c). */
    weir_resp_client *router; /* NULL = none */
    char *router_text;        /* as written */
    weir_tmpl *router_key;    /* the key's variables; NULL: router_key_text as it is */
    char *router_key_text;
    uint32_t router_timeout_ms;
    bool router_fallback_error; /* router_fallback = "error": no upstream after a miss */
    /* Plugins: the built-in ones this location's own keys make (owned),
     * then those its `plugins` names, in order; and the chains by step. */
    weir_plugin **plugins;
    size_t n_plugins;
    weir_plugin **fused; /* merged plugins the chains run instead of neighbours (plugin.h merge) */
    size_t n_fused;
    char **plugin_names; /* `plugins` as written */
    size_t n_plugin_names;
    weir_plugin_chain chains[WEIR_CFG_CHAINS];
};

typedef enum weir_cfg_protocol {
    WEIR_CFG_HTTP,
    WEIR_CFG_TCP,             /* an L4 server (weir/l4.h): its upstream, no locations */
    WEIR_CFG_TLS_PASSTHROUGH, /* L4, routed by the ClientHello's server name */
    WEIR_CFG_UDP,             /* datagrams balanced per client address */
    WEIR_CFG_RESP,            /* a ring service: GET key answers its backend (weir/resp.h) */
} weir_cfg_protocol;

/* sni_routes / tls_passthrough: a server name ("a.example.com", or
 * "*.example.com" for any name under it) and where its connections go. */
typedef struct weir_cfg_sni_route {
    char *name; /* lower case; a wildcard keeps its dot: ".example.com" */
    bool wild;
    weir_cfg_upstream *upstream;
    char *upstream_name; /* until the upstreams are looked up */
    int line;
} weir_cfg_sni_route;

struct weir_cfg_server {
    char *name;
    int line;
    weir_cfg_protocol protocol;
    weir_cfg_upstream *upstream; /* a TCP server's; a passthrough server's default */
    weir_tcp_options tcp;        /* a TCP server's settings */
    weir_udp_options udp;        /* a UDP server's */
    weir_resp_options resp;      /* a RESP server's */
    /* Passthrough by server name: a tls_passthrough server's sni_routes,
     * an HTTPS server's tls_passthrough (the rest it terminates). */
    weir_cfg_sni_route *sni_routes;
    size_t n_sni_routes;
    weir_access_log *tcp_access_log; /* an HTTPS server's, for the connections it passes */
    /* As in the file, but a UDP server's are "udp://ip:port": the name
     * the library gives them, so a TCP and a UDP server may share one. */
    char **addrs;
    size_t n_addrs;
    weir_cfg_location **locations;
    size_t n_locations;
    weir_router *router;
    weir_access_log *access_log; /* NULL = off */
    char *access_log_file;       /* where it goes: a path, or "-" (stdout, the default) */
    weir_proxy_options opts;     /* timeouts and limits (opts.tls stays NULL here) */
    weir_cfg_tls tls;            /* tls.n_certs == 0: plain */
    bool redirect_https;         /* answer everything with a redirect to https */
    uint32_t https_port;         /* port in that redirect (443 = none) */
    weir_plugin *redirect;       /* redirect_https as a built-in plugin, run before routing */
    const char *otlp_endpoint;   /* traces go there (app/otel/export.h), or NULL */
    char *prometheus_path;       /* the metrics answered on this path, or NULL */
    weir_cidr *prometheus_allow; /* to these clients (loopback when none were listed) */
    size_t n_prometheus_allow;
    bool server_timing; /* responses carry a Server-Timing header */
};

typedef struct weir_cfg_basic {
    int threads; /* 0 = CPUs */
    char *pid_file;
    char *error_log;
    char *log_level;
    uint32_t grace_period_ms;
    char *upgrade_sock;
    char *temp_dir; /* request bodies spilled to files (request_buffer_file_size) */
    /* A config from etcd (app/etcd/source.h): read from the instance's
     * --local file before etcd is reached; checked, not used, elsewhere. */
    char *config_cache;                       /* the last good snapshot, or NULL */
    char *etcd_cacert, *etcd_cert, *etcd_key; /* TLS to etcd */
    char *instance_id;                        /* in /PREFIX/instances/ID [hostname-pid] */
    uint32_t instance_ttl_ms;                 /* its lease [10 s] */
    /* Event notifications (app/webhook.h). */
    char *webhook;           /* URL, or NULL */
    int webhook_type;        /* weir_webhook_type */
    uint32_t webhook_events; /* bits of weir_event; all when none are listed */
    /* Traces (app/otel/): for servers with otlp_exporter. */
    char *otlp_service_name; /* NULL: "weir" */
    char **otlp_headers;     /* "Name: value" sent with each export */
    size_t n_otlp_headers;
    weir_sampler otlp_sampler;       /* [parentbased_always_on] */
    uint32_t otlp_batch_size;        /* [512] */
    uint32_t otlp_flush_interval_ms; /* [5 s] */
    bool otlp_json;                  /* otlp_protocol = "http/json" [http/protobuf] */
    /* Metrics pushed to a Pushgateway (app/admin/prom_push.h). */
    char *prometheus_push;                /* URL, or NULL */
    uint32_t prometheus_push_interval_ms; /* [15 s] */
} weir_cfg_basic;

/* [admin]: the admin API (src/app/admin.h); addr NULL = off. */
typedef struct weir_cfg_admin {
    char *addr;        /* listen "ip:port", or NULL */
    int line;          /* of 'addr' (or the section), for messages */
    char *token;       /* bearer token (from 'token' or read from 'token_file'), or NULL */
    char *token_file;  /* where the token came from, or NULL */
    bool persist;      /* write runtime membership changes back to the file */
    uint32_t history;  /* configurations applied through the API to keep (0: none) */
    char *history_dir; /* where; NULL: FILE.history next to the file */
} weir_cfg_admin;

#define WEIR_CFG_MAX_APP_SERVERS 64

/* The route of a server name (lower case, "" for none): exact, else the
 * longest wildcard suffix; NULL if none. */
const weir_cfg_sni_route *weir__cfg_sni_route(const weir_cfg_server *s, const char *sni);

/* A store shared by the snapshots whose [caches.NAME] is the same
 * (caches.c): made when a snapshot goes live, never in weir -t. */
typedef struct weir_cache_store {
    _Atomic long refs;
    struct weir_cache *c;
} weir_cache_store;

/* [caches.NAME]: a cache store's sizes (weir/cache.h). */
typedef struct weir_cfg_cache {
    char *name;
    int line;
    uint64_t memory, disk, max_file;
    char *directory; /* the disk tier, or NULL */
    weir_cache_store *store;
} weir_cfg_cache;

/* The [caches.NAME] of a snapshot, or NULL. */
weir_cfg_cache *weir__cfg_cache_named(struct weir_config *c, const char *name);
/* Gives each cache section of cfg its store: old's when the section is
 * the same there, else a new one (logged on failure: false). Main
 * thread, before cfg goes live. */
bool weir__cfg_cache_stores(struct weir_config *cfg, const struct weir_config *old);

struct weir_config {
    _Atomic long refs;
    char *file; /* for messages */
    /* Which load this is: 1 at the start, one more for each reload that
     * took (app.c); when it took (Unix seconds); and a hash of its text,
     * the same for the same file on every instance. */
    uint64_t revision;
    int64_t loaded_unix;
    uint64_t digest;
    /* Each section's text hashed ("upstreams.api" -> hash), for the
     * sections a reload changed; none when the text did not cut cleanly. */
    struct weir_cfg_section_hash {
        char *key;
        uint64_t hash;
    } * section_hashes;
    size_t n_section_hashes;
    weir_cfg_basic basic;
    weir_cfg_admin admin;
    weir_cfg_server *servers;
    size_t n_servers;
    weir_cfg_location *locations;
    size_t n_locations;
    weir_cfg_upstream *upstreams;
    size_t n_upstreams;
    weir_cfg_cert *certs;
    size_t n_certs;
    weir_plugin **plugins; /* [plugins.NAME] */
    size_t n_plugins;
    weir_cfg_cache *caches; /* [caches.NAME], and "default" when a plugin needs it */
    size_t n_caches;
    /* By the app's listener (server_app, app.c) index: the server whose
     * settings its requests get in this snapshot, or -1 (removed). Set
     * before the snapshot is published, so one load gives both; a reload
     * undone after publishing adds the entries of its new listeners. */
    int16_t app_server[WEIR_CFG_MAX_APP_SERVERS];
    _Atomic size_t n_app_servers;
};

/* The library's spec of a server's TLS settings; the arrays it points to
 * are malloc'd (free with weir__cfg_tls_spec_free) and its strings belong
 * to the snapshot. */
int weir__cfg_tls_spec(const weir_cfg_tls *t, weir_tls_server_spec *out);
void weir__cfg_tls_spec_free(weir_tls_server_spec *spec);

/* Every error found while loading, each "FILE:LINE: message". */
typedef struct weir_cfg_errors {
    char **v;
    size_t n;
} weir_cfg_errors;

/*
 * Loads and validates a configuration from text (file names the source in
 * messages). Returns a snapshot with one reference, or NULL with every
 * error appended to errs. Resolves hostnames of upstream addresses (may
 * block: never call it on a worker).
 */
weir_config *weir__config_load(const char *text, size_t len, const char *file,
                               weir_cfg_errors *errs);
/* The sections ("upstreams.api", "basic") that cfg adds to old, then those
 * it changes, then those it removes: fn(arg, "added" | "changed" |
 * "removed", section) for each. False (nothing called) when a snapshot
 * has no section hashes (one not loaded from TOML). */
bool weir__config_diff(const weir_config *old, const weir_config *cfg,
                       void (*fn)(void *arg, const char *change, const char *section), void *arg);
/* Reads the file and loads it. */
weir_config *weir__config_load_file(const char *path, weir_cfg_errors *errs);

/* Takes / drops a reference; the last drop frees the snapshot. Any thread. */
weir_config *weir__config_ref(weir_config *c);
void weir__config_unref(weir_config *c);

void weir__cfg_errors_free(weir_cfg_errors *errs);
/* Appends a message (a printf format) to errs; nothing when memory runs
 * out. */
void weir__cfg_errors_add(weir_cfg_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* When false, hostnames in upstream addresses are an error instead of
 * being resolved (fuzzing must not query DNS). Default true. */
extern bool weir__config_resolve_names;

/* Set while a reload loads the new file: the backends the running
 * upstream `name` found with the same discovery_spec (malloc'd, *n of
 * them; NULL if none), for the new one to start from instead of
 * resolving at load, blocking, what the running one already knows. */
extern weir_lb_target *(*weir__config_discovered)(const char *name, const char *spec, size_t *n);

/* The embedded default configuration (TOML text). */
extern const char weir__default_config[];

#endif
