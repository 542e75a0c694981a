/*
 * split.h - a configuration file's text cut into its sections, each
 * section's text as written: what `weir config push` stores as one etcd
 * key each, and how a config cache file is read back.
 *
 * Only the header lines are interpreted (strings, multi-line strings and
 * arrays are skipped over, so a "[" inside them is not a header); the
 * bodies are checked by the loader later.
 */
#ifndef WEIR_APP_ETCD_SPLIT_H
#define WEIR_APP_ETCD_SPLIT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct weir_cfg_section {
    char *section;    /* "basic", "admin", "servers", ... (malloc'd) */
    char *name;       /* NAME of [servers.NAME] (decoded, malloc'd); NULL for [basic] and [admin] */
    const char *body; /* the text after the header line, up to the next header */
    size_t body_len;
    int line; /* of the header, 1-based */
} weir_cfg_section;

/* Whether section is one of the named ones ([servers.NAME] ...) or a
 * single one ([basic], [admin]); neither: not a configuration section. */
bool weir__cfg_section_named(const char *section);
bool weir__cfg_section_single(const char *section);

/*
 * Cuts text into its sections. With fragment, text is one section's body:
 * it must hold no header at all (*n is 0 on success). Returns 0, or -1
 * with *err_line and err set (a header that is not a configuration
 * section, a sub-table header, an array of tables, keys outside any
 * section, an unterminated string).
 */
int weir__cfg_split(const char *text, size_t len, bool fragment, weir_cfg_section **out, size_t *n,
                    int *err_line, char *err, size_t err_len);
void weir__cfg_sections_free(weir_cfg_section *v, size_t n);

#endif
