/*
 * config_json.c - a configuration snapshot as JSON, for GET /api/config
 * (see admin.h). The shape follows the TOML file: one object per section
 * kind, keyed like the file's keys; durations in milliseconds (`*_ms`).
 * Secrets (the admin token) are never written out.
 *
 * Durations and sizes are the values in effect: a setting left out shows
 * the default the program fills in for it, taken from where it is applied
 * (weir__proxy_options_defaults for a server's options and an upstream's
 * timeouts, config.c for what it fills itself, the health checker's for a
 * health check), never the 0 that stands for "default" in the snapshot.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "app/admin/admin.h"
#include "app/plugin/plugin.h"

/* What weir_upstream_set_health_check fills for a zero field (lb.h). */
#define HC_INTERVAL_MS 5000
#define HC_TIMEOUT_MS 2000
#define HC_RISE 2
#define HC_FALL 3

static uint32_t or_default(uint32_t v, uint32_t def)
{
    return v ? v : def;
}

/* The library's defaults, for a server's options and for the upstream
 * timeouts a session falls back to (session.c start_peer: the server's,
 * which no configuration key sets). */
static weir_proxy_options library_defaults(void)
{
    weir_proxy_options d = {0};
    weir_proxy_options_defaults(&d);
    return d;
}

/* An upstream's timeouts in effect (balance.c: the upstream's, else the
 * server's defaults); the location's override them. */
typedef struct upstream_timeouts {
    uint32_t connect_ms, read_ms, write_ms, idle_ms;
} upstream_timeouts;

static upstream_timeouts upstream_timeouts_of(const weir_cfg_upstream *u)
{
    weir_proxy_options d = library_defaults();
    return (upstream_timeouts){
        .connect_ms = or_default(u->connection_timeout_ms, d.connect_timeout_ms),
        .read_ms = or_default(u->read_timeout_ms, d.upstream_read_timeout_ms),
        .write_ms = or_default(u->write_timeout_ms, d.upstream_write_timeout_ms),
        .idle_ms = or_default(u->idle_timeout_ms, d.upstream_idle_timeout_ms),
    };
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *string_array(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *headers_json(const weir_cfg_headers *h, bool with_value)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < h->n; i++) {
        if (with_value) {
            char *line = NULL;
            if (asprintf(&line, "%s: %s", h->v[i].name, h->v[i].value ? h->v[i].value : "") >= 0)
                json_array_append_new(a, json_string(line));
            free(line);
        } else {
            json_array_append_new(a, json_string(h->v[i].name));
        }
    }
    return a;
}

size_t weir__admin_algo_text(const weir_cfg_upstream *u, char *buf, size_t buf_len)
{
    static const char *const keys[] = {"", "ip", "uri", "path", "header:", "cookie:", "query:"};
    int n;
    if (u->algo == WEIR_LB_KETAMA || u->algo == WEIR_LB_MAGLEV)
        n = snprintf(buf, buf_len, "%s:%s%s", u->algo == WEIR_LB_KETAMA ? "hash" : "maglev",
                     keys[u->hash_key], u->hash_name ? u->hash_name : "");
    else
        n = snprintf(buf, buf_len, "%s", weir_lb_algo_name(u->algo));
    return n < 0 ? 0 : (size_t)n;
}

static json_t *upstream_json(const weir_cfg_upstream *u)
{
    char algo[300];
    weir__admin_algo_text(u, algo, sizeof(algo));
    upstream_timeouts ut = upstream_timeouts_of(u);
    json_t *addrs = json_array();
    for (size_t i = 0; addrs && i < u->n_backends; i++) {
        /* A hostname resolves to several backends with the same text. */
        if (i && strcmp(u->backends[i].text, u->backends[i - 1].text) == 0)
            continue;
        json_array_append_new(addrs, json_string(u->backends[i].text));
    }
    json_t *o =
        json_pack("{s:s, s:o, s:s, s:I, s:o, s:I, s:I, s:I, s:I, s:I}", "name", u->name, "addrs",
                  addrs, "algo", algo, "max_retries", (json_int_t)u->max_retries, "sticky_cookie",
                  str_or_null(u->sticky_cookie), "connection_timeout_ms", (json_int_t)ut.connect_ms,
                  "total_connection_timeout_ms", (json_int_t)u->total_connection_timeout_ms,
                  "read_timeout_ms", (json_int_t)ut.read_ms, "write_timeout_ms",
                  (json_int_t)ut.write_ms, "keepalive", (json_int_t)u->keepalive);
    if (!o)
        return NULL;
    json_object_set_new(o, "idle_timeout_ms", json_integer(ut.idle_ms));
    json_object_set_new(o, "tls", json_boolean(u->tls));
    json_object_set_new(o, "alpn", json_string(u->h2 ? "h2" : u->h2_or_h1 ? "h2,h1" : "h1"));
    const weir_health_check *hc = &u->hc;
    if (hc->kind == WEIR_HEALTH_NONE) {
        json_object_set_new(o, "health_check", json_null());
    } else {
        char url[1400];
        if (hc->kind == WEIR_HEALTH_TCP)
            snprintf(url, sizeof(url), "tcp://");
        else if (hc->kind == WEIR_HEALTH_GRPC)
            snprintf(url, sizeof(url), "grpc://%s", hc->path);
        else
            snprintf(url, sizeof(url), "http://%s%s", hc->host, hc->path);
        json_t *st = json_array();
        for (size_t i = 0; st && i < hc->n_expect_status; i++)
            json_array_append_new(st, json_integer(hc->expect_status[i]));
        json_object_set_new(
            o, "health_check",
            json_pack("{s:s, s:I, s:I, s:I, s:I, s:o, s:s}", "url", url, "interval_ms",
                      (json_int_t)or_default(hc->interval_ms, HC_INTERVAL_MS), "timeout_ms",
                      (json_int_t)or_default(hc->timeout_ms, HC_TIMEOUT_MS), "rise",
                      (json_int_t)or_default(hc->rise, HC_RISE), "fall",
                      (json_int_t)or_default(hc->fall, HC_FALL), "status", st, "body",
                      hc->expect_body));
    }
    return o;
}

static json_t *plugin_json(const weir_plugin *p)
{
    return json_pack("{s:s, s:s, s:s, s:b}", "name", p->name, "category",
                     p->def ? p->def->category : "?", "step", weir__plugin_step_name(p->step),
                     "builtin", (int)p->builtin);
}

static json_t *location_json(const weir_cfg_location *l)
{
    json_t *o =
        json_pack("{s:s, s:o, s:s, s:o, s:b}", "name", l->name, "host",
                  string_array(l->hosts, l->n_hosts), "path", l->path, "upstream",
                  l->upstream ? json_string(l->upstream->name) : json_null(), "echo", (int)l->echo);
    if (!o)
        return NULL;
    json_object_set_new(o, "weight", l->has_weight ? json_integer(l->weight) : json_null());
    json_object_set_new(o, "proxy_set_headers", headers_json(&l->proxy_set, true));
    json_object_set_new(o, "proxy_add_headers", headers_json(&l->proxy_add, true));
    json_object_set_new(o, "proxy_remove_headers", headers_json(&l->proxy_remove, false));
    json_object_set_new(o, "response_set_headers", headers_json(&l->resp_set, true));
    json_object_set_new(o, "response_add_headers", headers_json(&l->resp_add, true));
    json_object_set_new(o, "response_remove_headers", headers_json(&l->resp_remove, false));
    json_object_set_new(o, "rewrite", str_or_null(l->rewrite_re ? l->rewrite_text : NULL));
    json_object_set_new(o, "router", str_or_null(l->router ? l->router_text : NULL));
    if (l->router) {
        json_object_set_new(o, "router_key", json_string(l->router_key_text));
        json_object_set_new(o, "router_timeout_ms", json_integer(l->router_timeout_ms));
        json_object_set_new(o, "router_fallback",
                            json_string(l->router_fallback_error ? "error" : "upstream"));
    }
    json_object_set_new(o, "client_max_body_size",
                        l->has_max_body ? json_integer((json_int_t)l->client_max_body_size)
                                        : json_null());
    /* The location's timeouts win over its upstream's; an echo location
     * connects nowhere. */
    if (l->upstream) {
        upstream_timeouts ut = upstream_timeouts_of(l->upstream);
        json_object_set_new(o, "connection_timeout_ms",
                            json_integer(or_default(l->connect_timeout_ms, ut.connect_ms)));
        json_object_set_new(o, "read_timeout_ms",
                            json_integer(or_default(l->read_timeout_ms, ut.read_ms)));
        json_object_set_new(o, "write_timeout_ms",
                            json_integer(or_default(l->write_timeout_ms, ut.write_ms)));
    } else {
        json_object_set_new(o, "connection_timeout_ms", json_null());
        json_object_set_new(o, "read_timeout_ms", json_null());
        json_object_set_new(o, "write_timeout_ms", json_null());
    }
    json_object_set_new(o, "request_buffer_size",
                        json_integer((json_int_t)l->request_buffer_bytes));
    json_object_set_new(o, "request_buffer_file_size",
                        json_integer((json_int_t)l->request_buffer_file_bytes));
    json_t *added = json_array();
    static const char *const added_names[] = {"x-request-id", "x-forwarded-for", "x-real-ip",
                                              "x-forwarded-proto", "via"};
    for (unsigned b = 0; added && b < 5; b++) {
        if (!l->has_added || (l->added & (1u << b)))
            json_array_append_new(added, json_string(added_names[b]));
    }
    json_object_set_new(o, "proxy_added_headers", added);
    json_object_set_new(o, "plugins", string_array(l->plugin_names, l->n_plugin_names));
    /* What runs, in order: the location's own rules made plugins, then
     * the ones it names. */
    json_t *chain = json_array();
    for (size_t i = 0; chain && i < l->n_plugins; i++)
        json_array_append_new(chain, plugin_json(l->plugins[i]));
    json_object_set_new(o, "chain", chain ? chain : json_array());
    return o;
}

static json_t *server_json(const weir_cfg_server *s)
{
    json_t *locs = json_array();
    for (size_t i = 0; locs && i < s->n_locations; i++)
        json_array_append_new(locs, json_string(s->locations[i]->name));
    weir_proxy_options eff = s->opts; /* with the defaults the server fills in */
    weir_proxy_options_defaults(&eff);
    const weir_proxy_options *p = &eff;
    /* A UDP server's addresses as the file gives them (the "udp://" is
     * the library's name for them), with its protocol. */
    json_t *addrs = json_array();
    for (size_t i = 0; addrs && i < s->n_addrs; i++) {
        const char *a = s->addrs[i];
        json_array_append_new(addrs, json_string(strncmp(a, "udp://", 6) == 0 ? a + 6 : a));
    }
    static const char *const protocols[] = {"http", "tcp", "tls_passthrough", "udp", "resp"};
    json_t *o = json_pack(
        "{s:s, s:s, s:o, s:o, s:b, s:o}", "name", s->name, "protocol", protocols[s->protocol],
        "addr", addrs, "locations", locs, "access_log", s->access_log != NULL, "access_log_file",
        str_or_null(s->access_log ? (s->access_log_file ? s->access_log_file : "-") : NULL));
    if (!o)
        return NULL;
    json_object_set_new(o, "client_header_timeout_ms", json_integer(p->client_header_timeout_ms));
    json_object_set_new(o, "client_body_timeout_ms", json_integer(p->client_body_timeout_ms));
    json_object_set_new(o, "keepalive_timeout_ms", json_integer(p->keepalive_timeout_ms));
    json_object_set_new(o, "send_timeout_ms", json_integer(p->send_timeout_ms));
    json_object_set_new(o, "max_header_size", json_integer(p->max_header_bytes));
    json_object_set_new(o, "max_headers", json_integer(p->max_headers));
    json_object_set_new(o, "max_body_size", json_integer((json_int_t)p->max_body_bytes));
    json_object_set_new(o, "max_uri_size", json_integer(p->max_uri_bytes));
    json_object_set_new(o, "tunnel_idle_timeout_ms", json_integer(p->tunnel_idle_timeout_ms));
    json_object_set_new(o, "tls_handshake_timeout_ms",
                        s->tls.n_certs ? json_integer(p->tls_handshake_timeout_ms) : json_null());
    json_object_set_new(o, "merge_slashes", json_boolean(!p->keep_slashes));
    json_object_set_new(o, "underscores_in_headers", json_boolean(p->underscores_in_headers));
    json_t *tp = json_array();
    for (uint32_t i = 0; tp && i < p->n_trusted_proxies; i++) {
        const weir_cidr *c = &p->trusted_proxies[i];
        char addr[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN + 8];
        inet_ntop(c->family, c->addr, addr, sizeof(addr));
        snprintf(text, sizeof(text), "%s/%u", addr, c->prefix_len);
        json_array_append_new(tp, json_string(text));
    }
    json_object_set_new(o, "trusted_proxies", tp ? tp : json_array());
    return o;
}

json_t *weir__config_to_json(const weir_config *c)
{
    const weir_cfg_basic *b = &c->basic;
    json_t *basic = json_pack(
        "{s:I, s:o, s:o, s:o, s:I, s:o, s:o}", "threads", (json_int_t)b->threads, "pid_file",
        str_or_null(b->pid_file), "error_log", str_or_null(b->error_log), "log_level",
        str_or_null(b->log_level), "grace_period_ms", (json_int_t)b->grace_period_ms,
        "upgrade_sock", str_or_null(b->upgrade_sock), "temp_dir", str_or_null(b->temp_dir));
    json_t *admin = c->admin.addr ? json_pack("{s:s, s:b, s:o, s:b}", "addr", c->admin.addr,
                                              "token", c->admin.token != NULL, "token_file",
                                              str_or_null(c->admin.token_file), "persist",
                                              (int)c->admin.persist)
                                  : json_null();
    json_t *servers = json_array(), *locations = json_array(), *upstreams = json_array();
    for (size_t i = 0; servers && i < c->n_servers; i++)
        json_array_append_new(servers, server_json(&c->servers[i]));
    for (size_t i = 0; locations && i < c->n_locations; i++)
        json_array_append_new(locations, location_json(&c->locations[i]));
    for (size_t i = 0; upstreams && i < c->n_upstreams; i++)
        json_array_append_new(upstreams, upstream_json(&c->upstreams[i]));
    json_t *plugins = json_array();
    for (size_t i = 0; plugins && i < c->n_plugins; i++)
        json_array_append_new(plugins, plugin_json(c->plugins[i]));
    /* json_pack "o" steals references, also on failure (NULLs fail it). */
    return json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "file", c->file ? c->file : "", "basic",
                     basic, "admin", admin, "servers", servers, "locations", locations, "upstreams",
                     upstreams, "plugins", plugins);
}
