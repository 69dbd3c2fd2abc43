/* libFuzzer harness: any byte string through ms_json_parse, then a full walk of the tree (every
 * accessor, every key looked up again through the sorted index). The first input byte picks
 * options (small depth / duplicate keys allowed) so those paths are fuzzed too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/assert.h"
#include "common/json.h"
#include "common/status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(const ms_json *v, int depth) {
    MS_ASSERT(depth <= 65);
    switch (ms_json_type_of(v)) {
    case MS_JSON_NULL:
    case MS_JSON_BOOL: break;
    case MS_JSON_NUMBER: (void)ms_json_num(v); (void)ms_json_int(v); break;
    case MS_JSON_STRING: {
        size_t n;
        const char *s = ms_json_str(v, &n);
        MS_ASSERT(s && s[n] == '\0' && ms_json_utf8_valid(s, n));
        break;
    }
    case MS_JSON_ARRAY:
        for (uint32_t i = 0; i < ms_json_len(v); i++) walk(ms_json_at(v, i), depth + 1);
        MS_ASSERT(ms_json_at(v, ms_json_len(v)) == NULL);
        break;
    case MS_JSON_OBJECT:
        for (uint32_t i = 0; i < ms_json_len(v); i++) {
            size_t kl;
            const char *k = ms_json_key_at(v, i, &kl);
            MS_ASSERT(k && ms_json_utf8_valid(k, kl));
            const ms_json *got = ms_json_get(v, k);
            /* keys with an embedded NUL are found under their prefix, or not at all */
            if (strlen(k) == kl) MS_ASSERT(got != NULL);
            walk(ms_json_value_at(v, i), depth + 1);
        }
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ms_json_opts o = {0};
    if (size > 0) {
        if (data[0] & 1) o.max_depth = 4;
        if (data[0] & 2) o.allow_duplicate_keys = true;
        if (data[0] & 4) o.max_nodes = 64;
        data++;
        size--;
    }
    ms_json_doc *d = NULL;
    ms_json_error e;
    int rc = ms_json_parse((const char *)data, size, &o, &d, &e);
    if (rc) {
        MS_ASSERT(d == NULL && e.msg[0] != '\0' && e.offset <= size);
        return 0;
    }
    walk(ms_json_root(d), 0);
    char err[64];
    int64_t i;
    (void)ms_json_get_i64(ms_json_root(d), "a", &i, err, sizeof err);
    ms_json_free(d);
    return 0;
}
