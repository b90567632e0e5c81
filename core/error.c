/* core/error: thread-local error message (see error.h). */
#include "core/error.h"

#include <stdio.h>
#include <string.h>

#define ERR_CAP 4096

static _Thread_local char err_msg[ERR_CAP];
static _Thread_local Status err_status = ADDC_OK;

static const char *const status_names[] = {
    [ADDC_OK] = "ok",
    [ADDC_ERR_INVALID] = "invalid argument",
    [ADDC_ERR_NOMEM] = "out of memory",
    [ADDC_ERR_IO] = "I/O error",
    [ADDC_ERR_FORMAT] = "format error",
    [ADDC_ERR_UNSUPPORTED] = "unsupported",
    [ADDC_ERR_EXTERNAL] = "external library error",
};
_Static_assert(sizeof(status_names) / sizeof(status_names[0]) == ADDC_ERR_COUNT,
               "status_names must name every Status");

const char *addc_status_name(Status st) {
    return (st >= 0 && st < ADDC_ERR_COUNT) ? status_names[st] : "unknown status";
}

Status addc_error_set(Status st, const char *fmt, ...) {
    char buf[ERR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (err_status == ADDC_OK) {
        snprintf(err_msg, sizeof err_msg, "%s", buf);
        err_status = st;
    } else {
        size_t n = strlen(err_msg);
        if (n + 16 < sizeof err_msg) {
            size_t room = sizeof err_msg - n - 10;
            snprintf(err_msg + n, sizeof err_msg - n, " (then: %.*s)", (int)room, buf);
        }
    }
    return st;
}

Status addc_error_context(Status st, const char *fmt, ...) {
    char ctx[ERR_CAP], old[ERR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    snprintf(old, sizeof old, "%s", err_msg);
    size_t lc = strlen(ctx);
    if (lc > sizeof err_msg / 2) lc = sizeof err_msg / 2;
    snprintf(err_msg, sizeof err_msg, "%.*s: %.*s", (int)lc, ctx, (int)(sizeof err_msg - lc - 3), old);
    if (err_status == ADDC_OK) err_status = st;
    return st;
}

const char *addc_error_message(void) { return err_msg; }
Status addc_error_status(void) { return err_status; }
void addc_error_clear(void) {
    err_msg[0] = 0;
    err_status = ADDC_OK;
}
