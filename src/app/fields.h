/*
 * fields.h - values inside request fields that several parts of the
 * program read: a cookie of the Cookie header(s), a parameter of the query.
 */
#ifndef WEIR_APP_FIELDS_H
#define WEIR_APP_FIELDS_H

#include "weir/weir.h"

/* The value of cookie `name` (names are case-sensitive, RFC 6265) in the
 * request's Cookie fields; .ptr NULL if there is none. */
weir_str weir__cookie(const weir_headers *h, const char *name);
/* How many times cookie `name` is sent (in every Cookie field). */
size_t weir__cookie_count(const weir_headers *h, const char *name);
/* The value of query parameter `name` ("" for "name" alone); .ptr NULL if
 * there is none. */
weir_str weir__query_param(weir_str query, const char *name);
/* How many times parameter `name` is in the query; *first is the first
 * one's value (.ptr NULL when none). Two are two opinions: callers that
 * check credentials refuse them. */
size_t weir__query_params(weir_str query, const char *name, weir_str *first);
/* Percent-decodes v into out (a '+' stays a '+', RFC 3986); the length,
 * or -1 for a broken escape or more than cap bytes. */
long weir__unescape(weir_str v, char *out, size_t cap);
/* The upstream target without parameter `name` (every occurrence). */
int weir__drop_query_param(weir_session *s, const char *name);

#endif
