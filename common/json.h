/* common/json.h — a small strict JSON parser (RFC 8259) for headers and config files.
 *
 * Strict: UTF-8 input only (overlong forms, surrogates and code points above U+10FFFF rejected),
 * no byte-order mark, no comments, no trailing commas, no leading zeros, no NaN/Infinity, no
 * unescaped control characters, no lone surrogate escapes, nothing but whitespace after the value,
 * and (unless opts say otherwise) no duplicate keys in one object. Nesting is limited
 * (opts.max_depth, default 64) and so are the input size and the node count, so hostile input costs
 * bounded memory and stack.
 *
 * Owns: ms_json_parse returns one document (ms_json_doc) holding every node and decoded string in
 * an arena; ms_json_free releases all of it at once. Node and string pointers stay valid until
 * then.
 * The input buffer is not referenced after ms_json_parse returns.
 * Threads: a document is read-only after parsing; any thread may read it concurrently.
 *
 * Numbers: every number has a double value (strtod rounding). Integer literals (no fraction, no
 * exponent) that fit in int64 also carry the exact value; "2.0" and "2e0" are NOT integers, which
 * is what a strict reader of shape lists and config counts wants.
 */
#ifndef MS_COMMON_JSON_H
#define MS_COMMON_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum ms_json_type {
    MS_JSON_NULL = 0,
    MS_JSON_BOOL,
    MS_JSON_NUMBER,
    MS_JSON_STRING,
    MS_JSON_ARRAY,
    MS_JSON_OBJECT,
} ms_json_type;

/* All-zero means defaults. */
typedef struct ms_json_opts {
    uint32_t max_depth;        /* nesting of arrays/objects; 0 = 64 */
    size_t max_size;           /* input bytes; 0 = 256 MiB */
    uint64_t max_nodes;        /* values in the document; 0 = 4 Mi */
    bool allow_duplicate_keys; /* default: a repeated key in one object is an error */
} ms_json_opts;

#define MS_JSON_DEFAULT_MAX_DEPTH 64u

/* Where and why parsing failed. msg reads "line L, col C (byte N): what" (col counts bytes). */
typedef struct ms_json_error {
    size_t offset; /* 0-based byte offset of the offending byte */
    uint32_t line; /* 1-based */
    uint32_t col;  /* 1-based, in bytes */
    char msg[256];
} ms_json_error;

typedef struct ms_json_doc ms_json_doc;
typedef struct ms_json ms_json; /* one value node, owned by its document */

/* Parse buf[0..len). Returns 0 and *out, or -MS_E_FORMAT (bad JSON, limits) / -MS_E_NOMEM with
 * *err filled (err may be NULL). */
int ms_json_parse(const char *buf, size_t len, const ms_json_opts *opts, ms_json_doc **out,
                  ms_json_error *err);
void ms_json_free(ms_json_doc *doc); /* NULL ok */

const ms_json *ms_json_root(const ms_json_doc *doc);
uint64_t ms_json_node_count(const ms_json_doc *doc);

/* --- inspection (all accept NULL and then return the "absent" answer) --- */
ms_json_type ms_json_type_of(const ms_json *v);      /* NULL -> MS_JSON_NULL */
const char *ms_json_type_name(ms_json_type t);       /* "null", "boolean", "number", ... */
const char *ms_json_kind(const ms_json *v);          /* type_name, or "integer" / "absent" */
size_t ms_json_offset(const ms_json *v);             /* byte offset of the value in the input */
uint32_t ms_json_len(const ms_json *v);              /* array items, object members, string bytes */
bool ms_json_is_int(const ms_json *v);               /* integer literal that fits int64 */

bool ms_json_bool(const ms_json *v);                 /* false unless a true boolean */
double ms_json_num(const ms_json *v);                /* 0 unless a number */
int64_t ms_json_int(const ms_json *v);               /* 0 unless ms_json_is_int */
const char *ms_json_str(const ms_json *v, size_t *len); /* NUL-terminated UTF-8, NULL unless a
                                                          * string; a "\u0000" escape shows as an
                                                          * embedded NUL: use len */

const ms_json *ms_json_at(const ms_json *arr, uint32_t i);           /* NULL if not array / OOB */
const ms_json *ms_json_get(const ms_json *obj, const char *key);     /* NULL if absent */
const char *ms_json_key_at(const ms_json *obj, uint32_t i, size_t *len); /* document order */
const ms_json *ms_json_value_at(const ms_json *obj, uint32_t i);

/* --- typed getters: 0, -MS_E_NOT_FOUND (key absent, err says so) or -MS_E_FORMAT (wrong type or
 * out of range: err says "'key': expected X, found Y"). err may be NULL. The message names the key
 * only (callers prefix the file). --- */
int ms_json_get_i64(const ms_json *obj, const char *key, int64_t *out, char *err, size_t err_len);
int ms_json_get_u32(const ms_json *obj, const char *key, uint32_t *out, char *err, size_t err_len);
int ms_json_get_f64(const ms_json *obj, const char *key, double *out, char *err, size_t err_len);
int ms_json_get_bool(const ms_json *obj, const char *key, bool *out, char *err, size_t err_len);
int ms_json_get_str(const ms_json *obj, const char *key, const char **out, char *err,
                    size_t err_len); /* rejects strings with embedded NUL */

/* Line and column (1-based, bytes) of a byte offset in buf; for callers reporting semantic errors
 * at a node's ms_json_offset. */
void ms_json_line_col(const char *buf, size_t len, size_t offset, uint32_t *line, uint32_t *col);

/* Strict UTF-8 validation (the same rules the parser applies). */
bool ms_json_utf8_valid(const char *s, size_t len);

/* Copy s[0..len) into out for an error message: printable bytes as they are, control bytes and
 * invalid UTF-8 as \n, \t or \xNN, cut with "..." to fit out_len (always NUL-terminated). */
void ms_json_escape(const char *s, size_t len, char *out, size_t out_len);

/* --- writer: one JSON value to a FILE that parses whatever the input ---
 * Strings are escaped (quotes, backslashes, control characters) and bytes that are not valid
 * UTF-8 (e.g. a file name in another encoding) become U+FFFD, so the output is always valid
 * RFC 8259. Numbers that are not finite have no JSON spelling: ms_json_write_f64 writes null and
 * counts them in nonfinite, so a caller can refuse to present such output as a result.
 * Nesting beyond MS_JSON_WRITER_DEPTH is a programmer error (asserted). Write errors are the
 * FILE's: check ferror/fflush. */
#define MS_JSON_WRITER_DEPTH 32

typedef struct ms_json_writer {
    FILE *f;
    bool spaced;        /* ", " and ": " between items (human-readable one-line output) */
    uint32_t depth;
    uint32_t nonfinite; /* NaN/Inf values written as null */
    bool first[MS_JSON_WRITER_DEPTH];
} ms_json_writer;

void ms_json_writer_init(ms_json_writer *w, FILE *f, bool spaced);
/* key: the member name inside an object, NULL inside an array or at the top. */
void ms_json_write_begin(ms_json_writer *w, const char *key, char bracket); /* '{' or '[' */
void ms_json_write_end(ms_json_writer *w, char bracket);                    /* '}' or ']' */
void ms_json_write_str(ms_json_writer *w, const char *key, const char *s);  /* NULL -> null */
void ms_json_write_u64(ms_json_writer *w, const char *key, uint64_t v);
void ms_json_write_i64(ms_json_writer *w, const char *key, int64_t v);
void ms_json_write_f64(ms_json_writer *w, const char *key, double v, int digits); /* %.{digits}g */
void ms_json_write_bool(ms_json_writer *w, const char *key, bool v);
void ms_json_write_null(ms_json_writer *w, const char *key);
/* A JSON string literal of s[0..len) (escaped as above) to f, quotes included. */
void ms_json_write_string(FILE *f, const char *s, size_t len);

#endif
