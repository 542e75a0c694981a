/*
 * cache_disk_fuzz.c - libFuzzer target for the cache's disk encoding
 * (cache/disk.c, cache/entry.c): any bytes read back as a file of the
 * disk tier must be refused or give an object whose lengths hold, and an
 * object that is accepted must encode to bytes that decode again. A file
 * is what a crash, a full disk or another program leaves: never trusted.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cache/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of its own size: a read past the end is seen. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    /* Half the inputs get a right CRC, so the lengths and the head behind
     * it are explored too, not only the check that refuses them. */
    if (size > 8 && (data[size - 1] & 1)) {
        uint32_t c = (uint32_t)crc32(0L, (const Bytef *)buf, (uInt)(size - 4));
        for (int i = 0; i < 4; i++)
            buf[size - 4 + i] = (char)(c >> (8 * i));
    }
    weir_cobj *o = weir__cdisk_decode(buf, size, NULL, 0);
    free(buf);
    if (!o)
        return 0;
    const weir_chead *h = weir__chead(o);
    for (size_t i = 0; i < h->e.n_fields; i++) {
        const weir_header *f = &h->e.fields[i];
        if (f->name.ptr < h->e.buf || f->value.ptr + f->value.len > h->e.buf + h->e.len)
            abort();
    }
    size_t len = 0;
    char *again = weir__cdisk_encode(o, &len);
    if (again) {
        weir_cobj *b = weir__cdisk_decode(again, len, o->key, strlen(o->key));
        if (!b || b->body_len != o->body_len || memcmp(b->body, o->body, o->body_len) != 0)
            abort();
        weir__cobj_unref(b);
        free(again);
    }
    weir__cobj_unref(o);
    return 0;
}
