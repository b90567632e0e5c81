/* core/error: status codes and the one place a failure's message is kept.
 *
 * Library functions return a Status (ADDC_OK = 0) or NULL, and leave a message with
 * addc_error_set(); only launch/ prints it and exits. The message is thread-local: the
 * first error of a chain is kept (addc_error_set does not overwrite an unread message
 * unless told to), so the user sees the cause rather than its consequences.
 *
 * One generic check macro, ADDC_CHECK_GEN, records the expression, file and line; the
 * per-library macros (CUDA_CHECK, MPI_CHECK, H5_CHECK, YAML_CHECK, ARCHIVE_CHECK...) are
 * built from it where those libraries are used. */
#ifndef ADDC_CORE_ERROR_H
#define ADDC_CORE_ERROR_H

#include <stdarg.h>

typedef enum Status {
    ADDC_OK = 0,
    ADDC_ERR_INVALID,     /* bad argument, shape or dtype */
    ADDC_ERR_NOMEM,       /* allocation failed or an arena is exhausted */
    ADDC_ERR_IO,          /* file or stream error */
    ADDC_ERR_FORMAT,      /* malformed input (config, weights, shards) */
    ADDC_ERR_UNSUPPORTED, /* valid request the chosen backend/device cannot do */
    ADDC_ERR_EXTERNAL,    /* an external library reported failure */
    ADDC_ERR_COUNT
} Status;

/* Records a printf-style message for the calling thread and returns `st`. If a message is
 * already pending it is kept and the new one is appended as context ("...: caused by"). */
Status addc_error_set(Status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the pending message with context, e.g. the file being loaded. */
Status addc_error_context(Status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *addc_error_message(void); /* "" when none */
Status addc_error_status(void);       /* ADDC_OK when none */
void addc_error_clear(void);
const char *addc_status_name(Status st);

/* Generic check: `ok_expr` evaluates the call's result `r`; on failure records
 * "<lib> error <detail> in `expr` at file:line" and returns `st` from the enclosing function. */
#define ADDC_CHECK_GEN(lib, expr, rtype, ok_cond, detail_fmt, detail_arg, st)                     \
    do {                                                                                          \
        rtype r_ = (expr);                                                                        \
        if (!(ok_cond)) {                                                                         \
            return addc_error_set((st), "%s error " detail_fmt " in `%s` at %s:%d", (lib),        \
                                  (detail_arg), #expr, __FILE__, __LINE__);                       \
        }                                                                                         \
    } while (0)

/* Propagate a Status from a call. */
#define TRY(expr)                                                                                 \
    do {                                                                                          \
        Status st_ = (expr);                                                                      \
        if (st_ != ADDC_OK) return st_;                                                           \
    } while (0)

#endif
