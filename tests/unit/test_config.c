/* tests/unit/test_config: YAML config loading through a small demo schema (nested structs,
 * lists, enums): merge order, override precedence, the write/re-read round trip, and one
 * bad input per refusal (files under tests/data/config/), each asserted on its message. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "tests/test_util.h"

#define DATA ADDC_SOURCE_DIR "/tests/data/config/"

typedef enum DemoOptimKind { DEMO_ADAM, DEMO_ADAMW, DEMO_SGD } DemoOptimKind;
static const char *const demo_optim_names[] = {"adam", "adamw", "sgd"};

typedef struct DemoModel {
    int64_t channels[4];
    int32_t n_channels;
    int64_t depth;
    char name[32];
    double dropout;
} DemoModel;

typedef struct DemoOptim {
    int32_t kind; /* DemoOptimKind */
    double lr;
    double betas[2];
    int32_t n_betas;
} DemoOptim;

typedef struct DemoTrain {
    DemoOptim optim;
    int64_t steps;
    int64_t batch_size;
    bool ema;
    char tags[3][16];
    int32_t n_tags;
} DemoTrain;

typedef struct Demo {
    char run_name[64];
    int64_t seed;
    DemoModel model;
    DemoTrain train;
    double scale;
} Demo;

static const ConfigField demo_model_fields[] = {
    CONFIG_LIST(DemoModel, channels, n_channels, CONFIG_TYPE_INT, "[64, 128]", "channels per level"),
    CONFIG_INT(DemoModel, depth, "1", 1, 8, "resnet blocks per level"),
    CONFIG_STRING(DemoModel, name, "unnamed", "preset name"),
    CONFIG_FLOAT(DemoModel, dropout, "0", "dropout probability"),
};
static const ConfigSchema demo_model_schema = CONFIG_SCHEMA("model", demo_model_fields);

static const ConfigField demo_optim_fields[] = {
    CONFIG_ENUM(DemoOptim, kind, "adam", demo_optim_names, "optimizer"),
    CONFIG_FLOAT(DemoOptim, lr, "1e-5", "learning rate"),
    CONFIG_LIST(DemoOptim, betas, n_betas, CONFIG_TYPE_FLOAT, "[0.0, 0.99]", "Adam betas"),
};
static const ConfigSchema demo_optim_schema = CONFIG_SCHEMA("optim", demo_optim_fields);

static const ConfigField demo_train_fields[] = {
    CONFIG_STRUCT(DemoTrain, optim, demo_optim_schema, "the optimizer"),
    CONFIG_INT(DemoTrain, steps, "100", 1, INT64_MAX, "optimizer steps"),
    CONFIG_INT(DemoTrain, batch_size, "4", 1, 1 << 20, "global batch"),
    CONFIG_BOOL(DemoTrain, ema, "false", "keep an EMA of the student"),
    CONFIG_LIST(DemoTrain, tags, n_tags, CONFIG_TYPE_STRING, NULL, "free-form tags"),
};
static const ConfigSchema demo_train_schema = CONFIG_SCHEMA("train", demo_train_fields);

static const ConfigField demo_fields[] = {
    CONFIG_STRING(Demo, run_name, "run", "name of the run directory"),
    CONFIG_INT(Demo, seed, "0", INT64_MIN, INT64_MAX, "the run's seed"),
    CONFIG_STRUCT(Demo, model, demo_model_schema, "the network"),
    CONFIG_STRUCT(Demo, train, demo_train_schema, "training"),
    CONFIG_FLOAT(Demo, scale, "1.5", "a float at the top level"),
};
static const ConfigSchema demo_schema = CONFIG_SCHEMA("demo", demo_fields);

/* Checks that `st` failed and that the pending message contains every NULL-terminated needle. */
static void expect_error(const char *what, Status st, ...) {
    const char *msg = addc_error_message();
    CHECK(st != ADDC_OK, "%s: expected a failure, got ok", what);
    va_list ap;
    va_start(ap, st);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        CHECK(strstr(msg, needle) != NULL, "%s: message lacks \"%s\": %s", what, needle, msg);
    va_end(ap);
    printf("  %-22s -> %s\n", what, msg);
    addc_error_clear();
}

/* Loads one data file and binds it; returns the status. */
static Status load_one(const char *file, Demo *d) {
    Config c;
    config_init(&c);
    Status st = config_load_file(&c, file);
    if (!st) st = config_bind(&c, &demo_schema, d);
    config_free(&c);
    return st;
}

static Status load_text(const char *text, Demo *d) {
    Config c;
    config_init(&c);
    Status st = config_load_string(&c, "inline.yaml", text);
    if (!st) st = config_bind(&c, &demo_schema, d);
    config_free(&c);
    return st;
}

static Status load_override(const char *ov, Demo *d) {
    Config c;
    config_init(&c);
    Status st = config_load_file(&c, DATA "base.yaml");
    if (!st) st = config_override(&c, ov);
    if (!st) st = config_bind(&c, &demo_schema, d);
    config_free(&c);
    return st;
}

static void test_defaults(void) {
    Demo d;
    memset(&d, 0xab, sizeof d);
    CHECK_OK(load_text("", &d));
    CHECK(!strcmp(d.run_name, "run") && d.seed == 0 && d.scale == 1.5, "top-level defaults");
    CHECK(d.model.n_channels == 2 && d.model.channels[0] == 64 && d.model.channels[1] == 128 &&
              d.model.channels[2] == 0,
          "list default [64, 128]: n %d", d.model.n_channels);
    CHECK(d.model.depth == 1 && !strcmp(d.model.name, "unnamed") && d.model.dropout == 0, "model defaults");
    CHECK(d.train.optim.kind == DEMO_ADAM && d.train.optim.lr == 1e-5 && d.train.optim.n_betas == 2 &&
              d.train.optim.betas[1] == 0.99,
          "optim defaults");
    CHECK(d.train.steps == 100 && d.train.batch_size == 4 && !d.train.ema && d.train.n_tags == 0, "train defaults");
    /* an empty struct value and comment-only text are defaults too */
    Demo e;
    CHECK_OK(load_text("# nothing\ntrain:\n", &e));
    CHECK(config_equal(&demo_schema, &d, &e), "'train:' with no keys gives the defaults");
}

static void test_merge_and_overrides(void) {
    Demo d;
    Config c;
    config_init(&c);
    CHECK_OK(config_load_file(&c, DATA "base.yaml"));
    CHECK_OK(config_load_file(&c, DATA "over.yaml"));
    CHECK_OK(config_override(&c, "train.optim.lr=5e-4"));
    CHECK_OK(config_override(&c, "train.optim.betas=[0.5, 0.75]"));
    CHECK_OK(config_override(&c, "run_name=hello world"));
    CHECK_OK(config_override(&c, "model.depth=0x3"));
    CHECK_OK(config_override(&c, "train.steps=2e3"));
    CHECK_OK(config_override(&c, "train.steps=3e3")); /* the later override wins */
    CHECK_OK(config_bind(&c, &demo_schema, &d));
    config_free(&c);
    /* from base.yaml only */
    CHECK(d.seed == 17 && d.train.batch_size == 8 && !strcmp(d.model.name, "tiny"), "base values kept");
    CHECK(d.train.n_tags == 2 && !strcmp(d.train.tags[0], "a") && !strcmp(d.train.tags[1], "b"), "tags");
    /* over.yaml wins over base.yaml; lists replace, maps merge */
    CHECK(d.model.n_channels == 2 && d.model.channels[0] == 8 && d.model.channels[1] == 16 &&
              d.model.channels[2] == 0,
          "channels replaced by the later file: n %d", d.model.n_channels);
    CHECK(d.model.dropout == 0.25 && d.train.ema && d.train.optim.kind == DEMO_ADAMW, "later file wins");
    /* overrides win over both */
    CHECK(d.train.optim.lr == 5e-4, "override lr: %g", d.train.optim.lr);
    CHECK(d.train.optim.n_betas == 2 && d.train.optim.betas[0] == 0.5 && d.train.optim.betas[1] == 0.75,
          "override betas");
    CHECK(!strcmp(d.run_name, "hello world"), "override run_name '%s'", d.run_name);
    CHECK(d.model.depth == 3 && d.train.steps == 3000, "override depth %lld steps %lld", (long long)d.model.depth,
          (long long)d.train.steps);

    /* the same through config_load, files in the other order */
    Demo e;
    const char *files[] = {DATA "over.yaml", DATA "base.yaml"};
    const char *ovs[] = {"seed=-5", "model.name=", "scale=-.inf"};
    CHECK_OK(config_load(&demo_schema, &e, files, 2, ovs, 3));
    CHECK(e.train.optim.lr == 1e-4 && e.train.optim.kind == DEMO_ADAM && e.model.n_channels == 3 &&
              e.model.dropout == 0.25,
          "reversed order: lr %g kind %d n_channels %d", e.train.optim.lr, e.train.optim.kind, e.model.n_channels);
    CHECK(e.seed == -5 && e.model.name[0] == 0 && isinf(e.scale) && e.scale < 0, "overrides seed/name/scale");

    /* anchors and aliases within the budget */
    Demo a;
    CHECK_OK(load_one(DATA "aliases_ok.yaml", &a));
    CHECK(!strcmp(a.run_name, "shared-name") && a.train.n_tags == 2 && !strcmp(a.train.tags[1], "8") &&
              a.model.channels[1] == 8,
          "aliases expanded: run_name '%s'", a.run_name);
}

static void test_bad_files(void) {
    Demo d;
    printf("bad inputs:\n");
    expect_error("unknown key", load_one(DATA "unknown_key.yaml", &d), "train.optim.lrr: unknown key",
                 "unknown_key.yaml:6:5", "did you mean 'train.optim.lr'?", NULL);
    expect_error("wrong type", load_one(DATA "wrong_type.yaml", &d),
                 "train.optim.lr: expected a float, got 'fast' (", "wrong_type.yaml:5:9)", NULL);
    expect_error("duplicate key", load_one(DATA "duplicate_key.yaml", &d), "duplicate_key.yaml:4:3",
                 "duplicate key 'steps' (also at line 2 of the same mapping)", NULL);
    expect_error("alias bomb", load_one(DATA "alias_bomb.yaml", &d), "alias_bomb.yaml:", "alias '*",
                 "beyond 100000 nodes", NULL);
    expect_error("deep nesting", load_one(DATA "deep_nesting.yaml", &d), "deep_nesting.yaml:",
                 "nests deeper than 64 levels", NULL);
    expect_error("syntax error", load_one(DATA "syntax_error.yaml", &d), "syntax_error.yaml:4:",
                 "YAML syntax error", NULL);
    expect_error("not a mapping", load_one(DATA "not_mapping.yaml", &d), "not_mapping.yaml:1:1",
                 "top level of a config must be a mapping", "not a list", NULL);
    expect_error("enum not allowed", load_one(DATA "enum_bad.yaml", &d), "train.optim.kind: 'adamw2' is not one of",
                 "adam, adamw, sgd", "enum_bad.yaml:3:11", "did you mean 'adamw'?", NULL);
    expect_error("list too long", load_one(DATA "list_too_long.yaml", &d), "model.channels: the list has 5 items",
                 "at most 4", "list_too_long.yaml:2:13", NULL);
    expect_error("int out of range", load_one(DATA "int_range.yaml", &d), "train.steps: the value '0' is out of range",
                 "at least 1", "int_range.yaml:2:10", NULL);
    expect_error("two documents", load_one(DATA "two_documents.yaml", &d), "two_documents.yaml:2:1",
                 "second YAML document", NULL);
    expect_error("missing file", load_one(DATA "no_such_file.yaml", &d), "cannot open config file",
                 "no_such_file.yaml", "No such file", NULL);
    expect_error("a directory", load_one(DATA, &d), "cannot read config file", NULL);
}

static void test_bad_text(void) {
    Demo d;
    expect_error("bool spelled yes", load_text("train:\n  ema: yes\n", &d),
                 "train.ema: expected a bool (true or false), got 'yes' (inline.yaml:2:8)", NULL);
    expect_error("quoted number", load_text("seed: \"12\"\n", &d), "seed: expected an int, got the quoted string '12'",
                 NULL);
    expect_error("float for int", load_text("seed: 1.5\n", &d), "seed: expected an int, got '1.5'", NULL);
    expect_error("int64 overflow", load_text("seed: 99999999999999999999\n", &d), "seed: the value",
                 "does not fit in 64 bits", NULL);
    expect_error("float overflow", load_text("scale: 1e999\n", &d), "scale: the value '1e999' is too large", NULL);
    expect_error("list element", load_text("model:\n  channels: [1, x]\n", &d),
                 "model.channels[1]: expected an int, got 'x' (inline.yaml:2:17)", NULL);
    expect_error("scalar for list", load_text("model:\n  channels: 3\n", &d),
                 "model.channels: expected a list of ints", NULL);
    expect_error("scalar for struct", load_text("model: 3\n", &d), "model: expected a mapping", NULL);
    expect_error("list for string", load_text("run_name: [a]\n", &d), "run_name: expected a string, got a list", NULL);
    expect_error("empty int", load_text("seed:\n", &d), "seed: expected an int, got an empty value", NULL);
    expect_error("string too long", load_text("model:\n  name: 0123456789012345678901234567890123\n", &d),
                 "model.name: the string is 34 bytes long, at most 31 fit", NULL);
    expect_error("unknown top key", load_text("sead: 1\n", &d), "sead: unknown key (inline.yaml:1:1)",
                 "did you mean 'seed'?", NULL);
    expect_error("no near key", load_text("model:\n  zzzzzz: 1\n", &d), "model.zzzzzz: unknown key",
                 "the keys under 'model' are: channels, depth, name, dropout", NULL);
    expect_error("dotted key in a file", load_text("train.steps: 3\n", &d), "train.steps: unknown key",
                 "nest the keys of a dotted path as mappings", NULL);
    expect_error("merge key", load_text("base: &b {seed: 1}\n<<: *b\n", &d), "inline.yaml:2:1",
                 "merge keys (<<) are not supported", NULL);
    expect_error("unknown alias", load_text("seed: *nope\n", &d), "alias '*nope' refers to no anchor", NULL);
    expect_error("tag", load_text("seed: !!int 3\n", &d), "tag 'tag:yaml.org,2002:int' is not supported", NULL);
    expect_error("complex key", load_text("? [a, b]\n: 1\n", &d), "a key must be a plain name, not a list", NULL);
    expect_error("bad utf-8", load_text("seed: \xff\xfe\n", &d), "inline.yaml: cannot read the YAML text", NULL);
    expect_error("deep flow list", load_text("model:\n  channels: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                                              "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
                                              "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
                                              &d),
                 "nests deeper than 64 levels", NULL);
    expect_error("!!str for int", load_text("seed: !!str 3\n", &d), "seed: expected an int, got the quoted string '3'",
                 NULL);
    CHECK_OK(load_text("run_name: !!str 3\nmodel: {name: 007}\n", &d));
    CHECK(!strcmp(d.run_name, "3") && !strcmp(d.model.name, "007"), "strings as written: '%s' '%s'", d.run_name,
          d.model.name);
}

static void test_bad_overrides(void) {
    Demo d;
    expect_error("override no '='", load_override("train.optim.lr", &d),
                 "bad override 'train.optim.lr': expected key.path=value", NULL);
    expect_error("override no key", load_override("=3", &d), "bad override '=3': expected key.path=value", NULL);
    expect_error("override empty seg", load_override("train..lr=3", &d), "bad override 'train..lr=3': empty key",
                 NULL);
    expect_error("override bad char", load_override("train.lr[0]=3", &d), "bad override", "character '['", NULL);
    expect_error("override bad value", load_override("model.channels=[1, 2", &d),
                 "override 'model.channels=[1, 2': YAML syntax error", NULL);
    expect_error("override mapping", load_override("model={depth: 2}", &d), "the value is a mapping", NULL);
    expect_error("override unknown", load_override("train.optim.lrr=3", &d),
                 "train.optim.lrr: unknown key (override 'train.optim.lrr=3'); did you mean 'train.optim.lr'?", NULL);
    expect_error("override under scalar", load_override("train.steps.x=1", &d),
                 "'train.steps' is a scalar (", "base.yaml:9:10), not a mapping, so it has no key 'x'", NULL);
    expect_error("override wrong type", load_override("train.ema=yes", &d),
                 "train.ema: expected a bool (true or false), got 'yes' (override 'train.ema=yes')", NULL);
}

typedef struct BadDefault {
    int64_t n;
} BadDefault;

static void test_bad_schema(void) {
    static const ConfigField f1[] = {CONFIG_INT(BadDefault, n, "zero", 0, 10, "")};
    static const ConfigSchema s1 = CONFIG_SCHEMA("bad", f1);
    static const ConfigField f2[] = {CONFIG_INT(BadDefault, n, "1", 0, 10, ""), CONFIG_INT(BadDefault, n, "1", 0, 10, "")};
    static const ConfigSchema s2 = CONFIG_SCHEMA("dup", f2);
    Config c;
    config_init(&c);
    BadDefault b;
    Status st = config_bind(&c, &s1, &b);
    CHECK(st == ADDC_ERR_INVALID, "bad default: status %d", (int)st);
    expect_error("bad schema default", st, "bad default in the schema", "n: expected an int, got 'zero'", NULL);
    expect_error("duplicate field", config_bind(&c, &s2, &b), "config schema 'dup'", "a duplicate name", NULL);
    config_free(&c);
}

static void test_round_trip(void) {
    /* the merged config of two files and overrides */
    Demo a, b;
    const char *files[] = {DATA "base.yaml", DATA "over.yaml"};
    const char *ovs[] = {"train.tags=[\"x: y\", '#z', \"q\\\"\\n\\t\"]", "scale=0.1"};
    CHECK_OK(config_load(&demo_schema, &a, files, 2, ovs, 2));
    /* values that are hard to write back */
    strcpy(a.run_name, "  lead: \"quoted\" #not-a-comment\n\\ tab\t\x01\x7f caf\xc3\xa9 \xc2\x91\xef\xbb\xbf");
    a.seed = INT64_MIN;
    a.model.dropout = 1.0 / 3.0;
    a.train.optim.betas[0] = -0.0;
    a.train.optim.betas[1] = 5e-324;
    a.train.optim.lr = 1e300;
    a.scale = NAN;

    char dir[] = "/tmp/addc_test_config_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    CHECK_OK(config_write(&demo_schema, &a, path));
    memset(&b, 0x5a, sizeof b);
    CHECK_OK(load_one(path, &b));
    CHECK(config_equal(&demo_schema, &a, &b), "re-read struct differs from the written one");
    CHECK(!strcmp(a.run_name, b.run_name), "run_name '%s' vs '%s'", a.run_name, b.run_name);
    CHECK(b.seed == INT64_MIN && isnan(b.scale) && signbit(b.train.optim.betas[0]) && b.train.optim.betas[1] == 5e-324 &&
              b.model.dropout == 1.0 / 3.0,
          "edge values");
    char *ta = config_format(&demo_schema, &a), *tb = config_format(&demo_schema, &b);
    CHECK(ta && tb && !strcmp(ta, tb), "formatting the re-read struct gives the same text");
    /* every field is written, defaults included, with help as comments */
    const char *must[] = {"run_name:", "seed: -9223372036854775808", "model:  # the network", "  channels: [8, 16]",
                          "  depth: 2", "  dropout: 0.3333333333333333", "train:", "  optim:", "    kind: adamw",
                          "    lr: 1e+300", "    betas: [-0.0, 5e-324]", "  steps: 1000",
                          "  ema: true", "scale: .nan  # a float at the top level", "  tags: [\"x: y\", \"#z\", "};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        CHECK(ta && strstr(ta, must[i]), "written config lacks \"%s\"", must[i]);
    printf("written config:\n%s", ta ? ta : "(null)\n");
    free(ta);
    free(tb);
    strcpy(b.model.name, "bad\xff");
    CHECK(config_format(&demo_schema, &b) == NULL, "a string that is not UTF-8 is refused");
    expect_error("non-UTF-8 string", addc_error_status(), "model.name: the string is not valid UTF-8", NULL);

    /* defaults only: write and read back */
    Demo d0, d1;
    CHECK_OK(load_text("", &d0));
    CHECK_OK(config_write(&demo_schema, &d0, path));
    CHECK_OK(load_one(path, &d1));
    CHECK(config_equal(&demo_schema, &d0, &d1), "defaults round trip");
    d1.train.optim.betas[1] = 0.5;
    CHECK(!config_equal(&demo_schema, &d0, &d1), "config_equal sees a changed list element");
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_defaults();
    test_merge_and_overrides();
    test_bad_files();
    test_bad_text();
    test_bad_overrides();
    test_bad_schema();
    test_round_trip();
    return test_main_end("test_config");
}
