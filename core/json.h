/* core/json: a small strict JSON reader (RFC 8259) for the WebDataset .json sidecars and the
 * safetensors header.
 *
 * json_parse() reads a whole document into a JsonDoc: a flat array of nodes in document order
 * plus one pool holding every decoded string (UTF-8, NUL-terminated, length kept, so strings
 * with \u0000 survive). The parser is iterative (an explicit stack), so nesting depth costs no
 * C stack; depth, input size and node count are limited (JsonLimits) and checked before any
 * allocation grows past them. A failure returns ADDC_ERR_FORMAT with "json: <what> at byte N".
 *
 * Strict means: exactly one value, surrounded only by space, tab, CR, LF; no BOM, comments,
 * trailing commas, single quotes, NaN/Infinity, leading zeros or '+'; strings are valid UTF-8
 * (no overlongs, no encoded surrogates, nothing above U+10FFFF) with no raw control
 * characters; numbers must be finite as doubles. Escaped surrogate pairs become one code
 * point; an escaped lone surrogate (allowed by the RFC grammar) becomes U+FFFD. Duplicate
 * object keys are accepted; json_get returns the last one, as Python's json does.
 *
 * Numbers keep both a double and, when the literal is an integer (no '.', no exponent) that
 * fits in int64, the exact integer (json_int). */
#ifndef ADDC_CORE_JSON_H
#define ADDC_CORE_JSON_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

typedef enum JsonType {
    JSON_NULL = 0,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
} JsonType;

typedef struct JsonNode {
    JsonType type;
    bool is_int;     /* number literal is an integer that fits in int64 */
    int32_t depth;   /* 0 for the root */
    int64_t next;    /* index of the next sibling in the parent, -1 for the last */
    int64_t count;   /* children of an array or object */
    int64_t key;     /* offset of the member's key in the string pool, -1 outside objects */
    int64_t key_len;
    int64_t str;     /* offset of a string value in the pool */
    int64_t str_len;
    double num;
    int64_t ival;
    int64_t pos;     /* byte offset of the value in the input */
} JsonNode;

typedef struct JsonDoc {
    JsonNode *nodes; /* n nodes; nodes[0] is the root; a container's first child is the next node */
    int64_t n;
    char *pool;      /* decoded strings and keys, each NUL-terminated */
} JsonDoc;

typedef struct JsonLimits {
    int64_t max_bytes; /* input size (default 128 MiB) */
    int32_t max_depth; /* nesting of arrays and objects (default 64) */
    int64_t max_nodes; /* values in the document (default 16 M) */
} JsonLimits;

/* Parses text[0 .. len) into doc (zeroed on failure). lim may be NULL for the defaults; a zero
 * field of lim also means its default. */
Status json_parse(const char *text, int64_t len, const JsonLimits *lim, JsonDoc *doc);
void json_free(JsonDoc *doc);

const JsonNode *json_root(const JsonDoc *doc);
/* First child of an array or object, NULL if empty; json_next gives the following sibling. */
const JsonNode *json_child(const JsonDoc *doc, const JsonNode *node);
const JsonNode *json_next(const JsonDoc *doc, const JsonNode *node);
/* Member `key` of an object (the last one if repeated), NULL if absent or not an object. */
const JsonNode *json_get(const JsonDoc *doc, const JsonNode *obj, const char *key);
/* Element i of an array, NULL if out of range or not an array. */
const JsonNode *json_at(const JsonDoc *doc, const JsonNode *arr, int64_t i);
/* A string value (or NULL when node is not a string); *len gets its byte length if len set. */
const char *json_string(const JsonDoc *doc, const JsonNode *node, int64_t *len);
/* The member's key, NULL for a node that is not an object member. */
const char *json_key(const JsonDoc *doc, const JsonNode *node);
/* true with *out set when node is a number (json_number) / an exact int64 integer (json_int). */
bool json_number(const JsonNode *node, double *out);
bool json_int(const JsonNode *node, int64_t *out);
const char *json_type_name(JsonType t);
/* true when s[0 .. len) is valid UTF-8 (the same rules the parser applies to strings). */
bool json_utf8_valid(const char *s, int64_t len);

#endif
