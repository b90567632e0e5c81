/* core/config: YAML configuration files bound to typed structs through a schema.
 *
 * The pipeline: parse one or more YAML files (libyaml) into a tree whose nodes remember file,
 * line and column; merge them in order (mappings merge key by key, recursively; scalars and
 * lists replace; an empty value does not erase a mapping); apply command-line overrides
 * `a.b.c=value` after the files, in order; bind the tree to a C struct described by a
 * ConfigSchema; write the bound struct back as YAML into the run directory.
 *
 *     Config c;
 *     config_init(&c);
 *     TRY(config_load_file(&c, "configs/add_xl.yaml"));
 *     TRY(config_override(&c, "train.lr=2e-5"));
 *     TRY(config_bind(&c, &train_schema, &cfg));   // every field set: from the tree or default
 *     config_free(&c);
 *     TRY(config_write(&train_schema, &cfg, "runs/x/config.yaml"));
 *
 * Refused, each with a message naming file:line:column: YAML syntax errors, unreadable files,
 * duplicate keys in one mapping (both lines named), a top level that is not a mapping, more
 * than one document per file, nesting deeper than CONFIG_MAX_DEPTH, aliases whose expansion
 * exceeds CONFIG_ALIAS_BUDGET nodes (anchors and aliases are otherwise allowed and copied),
 * merge keys (<<), tags other than !!str. At bind: unknown keys (full dotted path, where it
 * was written, a did-you-mean), wrong types ("train.lr: expected a float, got 'fast'
 * (runs/x.yaml:12:7)"), ints out of range, enum values not in the list, lists too long,
 * strings too long for their buffer.
 *
 * Scalars: bool is true/false (also True/TRUE/False/FALSE); int is decimal, 0x hex or 0o
 * octal, or float notation of an exact integer (1e6); float is YAML 1.2 (1, 1.5, 3e-4, .inf,
 * -.inf, .nan); a quoted scalar is a string and is refused where a bool, int or float is
 * expected. A string field takes any scalar's text as written (`name: 007` is "007"); an
 * empty value (`key:` or ~ or null) is an empty string for strings, all defaults for a
 * struct, and an error for other types.
 *
 * Returns Status and leaves messages through core/error.h; never prints or exits. */
#ifndef ADDC_CORE_CONFIG_H
#define ADDC_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/error.h"

#define CONFIG_MAX_DEPTH 64          /* nesting levels of mappings and lists */
#define CONFIG_ALIAS_BUDGET 100000   /* nodes that alias expansion may copy, per document */
#define CONFIG_MAX_FILE_BYTES (16 << 20)

typedef enum ConfigType {
    CONFIG_TYPE_BOOL,   /* bool */
    CONFIG_TYPE_INT,    /* int64_t, in [min, max] */
    CONFIG_TYPE_FLOAT,  /* double */
    CONFIG_TYPE_STRING, /* char[size], NUL-terminated */
    CONFIG_TYPE_ENUM,   /* int32_t: index into names */
    CONFIG_TYPE_STRUCT, /* a nested struct described by sub */
    CONFIG_TYPE_LIST,   /* elem[max_len] (int64_t, double or char[size]) + int32_t count */
    CONFIG_TYPE_COUNT
} ConfigType;

typedef struct ConfigSchema ConfigSchema;

/* One field of a struct. Fill with the CONFIG_* macros below. */
typedef struct ConfigField {
    const char *name;
    ConfigType type;
    size_t offset;        /* of the value (LIST: of the array) in the struct */
    const char *def;      /* default as YAML text: "3e-4", "true", "adam", "[64, 128]"; NULL:
                             0 / false / "" / first enum value / empty list. STRING: the literal
                             text. STRUCT: unused (each sub-field has its own) */
    const char *help;     /* one line */
    int64_t min, max;     /* INT and LIST of INT: inclusive range */
    const char *const *names; /* ENUM: allowed values */
    int32_t count;            /* ENUM: number of names */
    const ConfigSchema *sub;  /* STRUCT */
    ConfigType elem;          /* LIST: CONFIG_TYPE_INT, _FLOAT or _STRING */
    int32_t max_len;          /* LIST: capacity of the array */
    size_t count_offset;      /* LIST: offset of the int32_t element count */
    size_t size;              /* STRING: buffer bytes; LIST: bytes per element */
} ConfigField;

struct ConfigSchema {
    const char *name; /* shown in messages about the top level */
    const ConfigField *fields;
    int32_t count;
};

/* T: the struct type; f: the member, also the key; def_: the default as YAML text, or NULL;
 * help_: one line, written as a comment beside the value. */
#define CONFIG_MEMBER_SIZE(T, f) sizeof(((T *)0)->f)
#define CONFIG_BOOL(T, f, def_, help_)                                                              \
    {.name = #f, .type = CONFIG_TYPE_BOOL, .offset = offsetof(T, f), .def = (def_), .help = (help_)}
/* lo, hi: the inclusive range (INT64_MIN, INT64_MAX: any int64_t) */
#define CONFIG_INT(T, f, def_, lo, hi, help_)                                                       \
    {.name = #f, .type = CONFIG_TYPE_INT, .offset = offsetof(T, f), .def = (def_), .help = (help_), \
     .min = (lo), .max = (hi)}
#define CONFIG_FLOAT(T, f, def_, help_)                                                             \
    {.name = #f, .type = CONFIG_TYPE_FLOAT, .offset = offsetof(T, f), .def = (def_), .help = (help_)}
#define CONFIG_STRING(T, f, def_, help_)                                                            \
    {.name = #f, .type = CONFIG_TYPE_STRING, .offset = offsetof(T, f), .def = (def_),              \
     .help = (help_), .size = CONFIG_MEMBER_SIZE(T, f)}
/* names_: an array (not a pointer) of const char *const */
#define CONFIG_ENUM(T, f, def_, names_, help_)                                                      \
    {.name = #f, .type = CONFIG_TYPE_ENUM, .offset = offsetof(T, f), .def = (def_), .help = (help_), \
     .names = (names_), .count = (int32_t)(sizeof(names_) / sizeof((names_)[0]))}
#define CONFIG_STRUCT(T, f, sub_, help_)                                                            \
    {.name = #f, .type = CONFIG_TYPE_STRUCT, .offset = offsetof(T, f), .help = (help_), .sub = &(sub_)}
/* f: an array member (int64_t[N], double[N] or char[N][M]); nf: its int32_t count member */
#define CONFIG_LIST(T, f, nf, elem_, def_, help_)                                                   \
    {.name = #f, .type = CONFIG_TYPE_LIST, .offset = offsetof(T, f), .def = (def_), .help = (help_), \
     .min = INT64_MIN, .max = INT64_MAX, .elem = (elem_),                                           \
     .max_len = (int32_t)(CONFIG_MEMBER_SIZE(T, f) / CONFIG_MEMBER_SIZE(T, f[0])),                 \
     .count_offset = offsetof(T, nf), .size = CONFIG_MEMBER_SIZE(T, f[0])}
#define CONFIG_SCHEMA(name_, fields_)                                                               \
    {.name = (name_), .fields = (fields_), .count = (int32_t)(sizeof(fields_) / sizeof((fields_)[0]))}

typedef struct ConfigNode ConfigNode;

/* The merged tree of everything loaded so far. */
typedef struct Config {
    Arena arena;      /* nodes and strings */
    ConfigNode *root; /* a mapping; NULL until something is loaded */
} Config;

void config_init(Config *c);
void config_free(Config *c);

/* Parses a file and merges it over what is loaded. */
Status config_load_file(Config *c, const char *path);
/* The same from memory; `name` stands for the file in messages. */
Status config_load_string(Config *c, const char *name, const char *text);
/* Applies "a.b.c=value"; value is a YAML scalar or a flow list ("[1, 2]"). The path is
 * checked against the schema when the tree is bound (unknown key, did-you-mean). */
Status config_override(Config *c, const char *assignment);

/* Fills `out` (a struct laid out as `s` describes) from the tree: every field is set, from
 * the tree where given, else from its default. On failure `out` is partly written. */
Status config_bind(const Config *c, const ConfigSchema *s, void *out);

/* The whole pipeline: files merged in order, then overrides, then bound. */
Status config_load(const ConfigSchema *s, void *out, const char *const *files, int32_t nfiles,
                   const char *const *overrides, int32_t noverrides);

/* The struct as YAML (every field, defaults included, help as comments); reading it back
 * gives the same struct. Returns malloc'd text, or NULL with an error set. */
char *config_format(const ConfigSchema *s, const void *obj);
/* config_format written durably: temp file, fsync, rename, fsync the directory. */
Status config_write(const ConfigSchema *s, const void *obj, const char *path);

/* Field-by-field equality (floats bitwise, any NaN equal to any NaN; strings and lists up to
 * their length). */
bool config_equal(const ConfigSchema *s, const void *a, const void *b);

#endif
