/*
 * match.h - what the restriction and cors plugins match strings against:
 * a list of patterns, each exact ("curl/8.0"), a wildcard ("*.example.com",
 * "curl/" followed by a star: a star matches any run of characters) or a
 * regex ("~^Mozilla/").
 * Exact and wildcard match case-insensitively; a regex as written (add
 * (?i) for case).
 */
#ifndef WEIR_APP_PLUGIN_MATCH_H
#define WEIR_APP_PLUGIN_MATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "app/config/read.h"
#include "weir/types.h"

typedef struct weir_patterns weir_patterns;

/* Reads the string list `key` of table t (errors: FILE:LINE, a bad regex
 * with PCRE2's reason). NULL when absent or invalid; *present says which. */
weir_patterns *weir__patterns_load(loader *ld, const weir_toml_value *t, const char *key,
                                   const char *section, bool *present);
/* True if s matches one of the patterns. on_error is the answer when none
 * matched and a regex could not decide (its match limit, 100,000 steps,
 * on a hostile input; no memory):
 * callers pass the stricter one, so that an attacker who makes the match
 * fail gains nothing (a deny list denies, an allow list refuses). */
bool weir__patterns_match(const weir_patterns *p, weir_str s, bool on_error);
void weir__patterns_free(weir_patterns *p);

#endif
