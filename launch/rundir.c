/* launch/rundir: the run directory of `addc train` (see rundir.h). */
#include "launch/rundir.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static Status mkdir_p(const char *path) {
    char buf[RUNDIR_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return addc_error_set(ADDC_ERR_INVALID, "run directory path too long: %s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char keep = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return addc_error_set(ADDC_ERR_IO, "cannot create directory '%s': %s", buf, strerror(errno));
            *p = keep;
            if (!keep) break;
        }
    }
    return ADDC_OK;
}

char *rundir_file(const RunDir *r, const char *file, char *out) {
    snprintf(out, RUNDIR_PATH_MAX, "%s/%s", r->path, file);
    return out;
}

Status rundir_open(RunDir *r, const char *dir, const char *name, int argc, char **argv) {
    memset(r, 0, sizeof *r);
    if (dir && dir[0]) {
        snprintf(r->path, sizeof r->path, "%s", dir);
    } else {
        char stamp[32];
        time_t now = time(NULL);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&now));
        snprintf(r->path, sizeof r->path, "runs/%s-%s", name, stamp);
    }
    TRY(mkdir_p(r->path));
    char p[RUNDIR_PATH_MAX];
    FILE *f = fopen(rundir_file(r, "command.txt", p), "a"); /* a resumed run adds its line */
    if (!f) return addc_error_set(ADDC_ERR_IO, "cannot write '%s': %s", p, strerror(errno));
    for (int i = 0; i < argc; i++) fprintf(f, "%s%s", i ? " " : "", argv[i]);
    fprintf(f, "\n");
    fclose(f);
    r->metrics = fopen(rundir_file(r, "metrics.jsonl", p), "a");
    if (!r->metrics) return addc_error_set(ADDC_ERR_IO, "cannot open '%s': %s", p, strerror(errno));
    return ADDC_OK;
}

void rundir_close(RunDir *r) {
    if (r->metrics) fclose(r->metrics);
    r->metrics = NULL;
}

void rundir_attach(RunDir *r, const char *path) {
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", path);
}

Status rundir_metrics_append(RunDir *r, const char *json) {
    if (!r->metrics) return ADDC_OK; /* a rank other than 0 */
    if (fprintf(r->metrics, "%s\n", json) < 0 || fflush(r->metrics) != 0)
        return addc_error_set(ADDC_ERR_IO, "cannot append to %s/metrics.jsonl: %s", r->path, strerror(errno));
    return ADDC_OK;
}
