/* distributed/checkpoint: one HDF5 file per checkpoint, written and read collectively by every
 * rank with parallel HDF5 (the MPI-IO driver; the default driver on the solo communicator),
 * committed atomically (ARCHITECTURE §5). This layer knows files, datasets and commits; what a
 * training checkpoint holds is launch/'s business (launch/train_ckpt.c).
 *
 * Layout of DIR (the run directory's checkpoints/):
 *   step-0000500.h5      committed checkpoints (7 digits, more when the step needs them)
 *   step-0000600.h5.tmp  one being written (ignored by scans, removed by the next save: a scan
 *                        must not delete what a running save writes)
 *   latest               a text file with the newest committed name and a newline (for people
 *                        and tools; ckpt_open_latest goes by the names of the .h5 files)
 * Commit: every rank closes the file (collective), rank 0 fsyncs it, renames .tmp to .h5, fsyncs
 * DIR, writes latest.tmp, fsyncs, renames it to latest, fsyncs DIR, then deletes committed files
 * beyond the newest `keep` (0: keep all; never the one just committed); a barrier ends the
 * commit. A crash at any moment leaves either the previous checkpoints or the new one complete,
 * never a partial .h5.
 *
 * Datasets: f32 tensors in their logical shape (e.g. a conv weight (Cout, Cin, KH, KW)), u8
 * blobs (1-D), and scalar attributes (i64, f64, string) on the file's root group. Datasets are
 * created collectively (every rank calls every write with the same name, shape and kind); the
 * data are written by row slabs: a rank passes rows [row_lo, row_hi) of dimension 0 (any split,
 * empty allowed; together the ranks' slabs cover every row exactly once). Every dataset carries a
 * u64 attribute "addc_checksum", a sum over its elements of a mix of (element index i, value
 * bits v: the f32 bits or the byte), splitmix64(i ^ (v << 32)), mod 2^64, combined over ranks
 * (an all-gather of the ranks' slabs and sums), so it does not depend on the slabs or the world
 * size; the reader recomputes it over the slabs it reads and compares it: summed over ranks when
 * the ranks' slabs partition the rows, per rank for each rank that reads every row (blobs are
 * always read whole), so a flipped byte in any dataset read is found, on every rank.
 * The root has "addc_schema" (ckpt schema version, i64), "addc_attr_checksum" (u64, over the
 * root's other attributes: kind, name, value; verified when the file is opened, since HDF5 keeps
 * large attributes in heaps without checksums) and, written last before close, "addc_complete"
 * = 1; root attribute names addc_* are reserved. Names are HDF5 paths; groups along them are
 * created.
 *
 * Every function is collective over `comm` unless it says otherwise, and returns the same Status
 * on every rank (failures on one rank are agreed by an all-reduce before returning). HDF5's own
 * error stack printing is off; its errors become messages naming the file and dataset. */
#ifndef ADDC_DISTRIBUTED_CHECKPOINT_H
#define ADDC_DISTRIBUTED_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "distributed/comm.h"

#define CKPT_SCHEMA_VERSION 1
#define CKPT_PATH_MAX 4096
#define CKPT_MAX_DIMS 8

typedef struct CkptFile CkptFile;

/* ---- writing ---- */

/* Creates DIR (and parents) if needed, removes stale *.h5.tmp, creates DIR/step-N.h5.tmp. */
Status ckpt_create(Comm *comm, const char *dir, int64_t step, CkptFile **out);
/* rows: (row_hi - row_lo) * prod(shape[1..]) floats of this rank's slab, row-major. */
Status ckpt_write_f32(CkptFile *f, const char *name, int32_t ndim, const int64_t *shape, int64_t row_lo,
                      int64_t row_hi, const float *rows);
/* A blob of n bytes (n may differ across ranks only if `owner` >= 0: then only that rank's
 * bytes/n are used and the others pass anything; the size is broadcast). owner -1: every rank
 * passes the same n and rank 0's bytes are written. */
Status ckpt_write_bytes(CkptFile *f, const char *name, const void *bytes, int64_t n, int owner);
Status ckpt_attr_i64(CkptFile *f, const char *name, int64_t v);  /* rank 0's value is written */
Status ckpt_attr_f64(CkptFile *f, const char *name, double v);
Status ckpt_attr_str(CkptFile *f, const char *name, const char *s);
/* Marks complete, closes and commits as above, keeping the newest `keep`; frees f. On failure the
 * .tmp is removed and nothing else changes (a failure after the rename, in updating latest or
 * pruning, is reported but the new checkpoint stays committed: the message says so).
 * *final_path (may be NULL) gets the committed path. */
Status ckpt_commit(CkptFile *f, int keep, char *final_path, int final_cap);
/* Closes and removes the .tmp without committing (an error path); frees f. */
void ckpt_abort(CkptFile *f);

/* ---- reading ---- */

/* The committed checkpoints of DIR, newest first (names only; no collective): *n of at most cap. */
Status ckpt_list(const char *dir, char (*names)[256], int cap, int *n);
/* Opens DIR's newest committed checkpoint that opens, has addc_complete = 1 and a schema this
 * build reads; a newer one that fails is skipped with a message to stderr on rank 0 ("checkpoint
 * X is unreadable (reason); falling back to Y"). ADDC_ERR_IO naming DIR when none is usable;
 * *found false (and ADDC_OK) when DIR has no checkpoint at all. Dataset checksums are verified as
 * datasets are read (a mismatch is ADDC_ERR_FORMAT naming the dataset: the caller may then try
 * ckpt_open_path on the next older one). */
Status ckpt_open_latest(Comm *comm, const char *dir, CkptFile **out, bool *found);
Status ckpt_open_path(Comm *comm, const char *path, CkptFile **out);
const char *ckpt_path(const CkptFile *f); /* the file open now (DIR/step-N.h5.tmp while writing) */

/* Shape of a dataset (0 dims for a missing one: ADDC_ERR_FORMAT naming it). */
Status ckpt_shape(CkptFile *f, const char *name, int32_t *ndim, int64_t *shape);
bool ckpt_has(CkptFile *f, const char *name);
Status ckpt_read_f32(CkptFile *f, const char *name, int32_t ndim, const int64_t *shape, int64_t row_lo,
                     int64_t row_hi, float *rows); /* shape must match the file's: checked */
/* A blob's size, then its bytes (every rank may read any blob). */
Status ckpt_bytes_size(CkptFile *f, const char *name, int64_t *n);
Status ckpt_read_bytes(CkptFile *f, const char *name, void *bytes, int64_t n);
Status ckpt_get_i64(CkptFile *f, const char *name, int64_t *v);
Status ckpt_get_f64(CkptFile *f, const char *name, double *v);
Status ckpt_get_str(CkptFile *f, const char *name, char *s, int64_t cap);
void ckpt_close(CkptFile *f); /* on a checkpoint being written: ckpt_abort */

/* Whether two checkpoint files hold the same contents: the same datasets with bit-identical values
 * and types, the same root attributes (files written through different drivers, e.g. on one rank
 * and on several, differ in layout but not in contents). *same false puts the first difference in
 * diff. One process, no collective. */
Status ckpt_compare(const char *path_a, const char *path_b, bool *same, char *diff, int diff_cap);

/* Bytes written/read by this rank through this file (the benchmark's MB/s). */
int64_t ckpt_bytes(const CkptFile *f);

#endif
