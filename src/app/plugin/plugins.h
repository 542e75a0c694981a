/*
 * plugins.h - every plugin category, for registry.c's table (one .c file
 * each in this folder; the built-in rules of a location are in
 * builtin.c and headers.c).
 */
#ifndef WEIR_APP_PLUGIN_PLUGINS_H
#define WEIR_APP_PLUGIN_PLUGINS_H

#include "app/plugin/plugin.h"

extern const weir_plugin_def weir__plugin_echo;
extern const weir_plugin_def weir__plugin_body_limit;
extern const weir_plugin_def weir__plugin_rewrite;
extern const weir_plugin_def weir__plugin_request_headers;
extern const weir_plugin_def weir__plugin_response_headers;
extern const weir_plugin_def weir__plugin_redirect;
extern const weir_plugin_def weir__plugin_mock;
extern const weir_plugin_def weir__plugin_ping;
extern const weir_plugin_def weir__plugin_request_id;
extern const weir_plugin_def weir__plugin_limit;
extern const weir_plugin_def weir__plugin_ip_restriction;
extern const weir_plugin_def weir__plugin_referer_restriction;
extern const weir_plugin_def weir__plugin_ua_restriction;
extern const weir_plugin_def weir__plugin_cors;
extern const weir_plugin_def weir__plugin_traffic_splitting;
extern const weir_plugin_def weir__plugin_accept_encoding;
extern const weir_plugin_def weir__plugin_stats;
extern const weir_plugin_def weir__plugin_csrf;
extern const weir_plugin_def weir__plugin_basic_auth;
extern const weir_plugin_def weir__plugin_key_auth;
extern const weir_plugin_def weir__plugin_forward_auth;
extern const weir_plugin_def weir__plugin_combined_auth;
extern const weir_plugin_def weir__plugin_jwt;
extern const weir_plugin_def weir__plugin_sub_filter;
extern const weir_plugin_def weir__plugin_compression;
extern const weir_plugin_def weir__plugin_directory;
extern const weir_plugin_def weir__plugin_cache;
#ifdef WEIR_TEST_PLUGINS
extern const weir_plugin_def weir__plugin_test_request_body;
#endif

/* The built-in plugins a location's or a server's own keys make (config
 * loader): each borrows what it needs from the location or server, which
 * outlives it. NULL on out of memory. */
/* The cache plugin's key of the request (its conf; NULL: the default
 * key), as weir_proxy_ops.cache_key returns it. */
size_t weir__plugin_cache_key(weir_session *s, const void *conf, char *out, size_t cap);
weir_plugin *weir__plugin_builtin(const weir_plugin_def *def, const char *owner, void *conf);
/* A headers conf over a location's lists (borrowed). */
void *weir__plugin_headers_borrow(const weir_cfg_headers *remove, const weir_cfg_headers *set,
                                  const weir_cfg_headers *add);
/* A redirect to https (a server's redirect_https). */
void *weir__plugin_redirect_https(uint32_t https_port);

#endif
