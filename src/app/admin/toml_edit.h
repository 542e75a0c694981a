/*
 * toml_edit.h - the admin API's writes to the configuration file: the
 * file read and replaced atomically (persistence), and the TOML text of an
 * upstream's addrs rewritten in place (weir__admin_rewrite_addrs in
 * admin.h). The file helpers serve the rest of src/app too (the etcd
 * cache, the ACME storage); any thread.
 */
#ifndef WEIR_APP_ADMIN_TOML_EDIT_H
#define WEIR_APP_ADMIN_TOML_EDIT_H

#include <stddef.h>

/* The whole file (NUL-terminated, *len bytes), or NULL with err set. */
char *weir__admin_read_file(const char *path, size_t *len, char *err, size_t err_len);
/* Writes text to path atomically: a synced PATH.tmp.PID (mode) renamed
 * over it. 0, or -1 with errno set. */
int weir__admin_write_file(const char *path, const char *text, size_t len, unsigned mode);
/* Writes text over path atomically (a synced temporary file renamed over
 * it), keeping the old contents (old, old_len) as PATH.prev. Returns 0, or
 * -1 with err set. */
int weir__admin_replace_file(const char *path, const char *text, size_t len, const char *old,
                             size_t old_len, char *err, size_t err_len);

/* Where section [kind.name] (name NULL: [kind], for basic and admin) is in
 * the TOML text: from its header line to the next header of another
 * section (its sub-tables included; the blank and comment lines before
 * that header are left to it). 1 with [*start, *end), 0 when it is not
 * there, -1 with err when the text is not well formed or the section is
 * written in a form a rewrite must not touch (in several places, as
 * dotted keys or an inline table at the top). */
int weir__admin_section_span(const char *t, size_t len, const char *kind, const char *name,
                             size_t *start, size_t *end, char *err, size_t err_len);

#endif
