#!/usr/bin/env python3
"""tests/ref/check_ckpt_h5py.py: reads a checkpoint that tests/mpi/test_checkpoint wrote with
h5py (another HDF5 reader than ours) and checks it against the test's value function.

Not part of CI (needs `pip install h5py`). Usage:
    mpirun -np 4 build/test_checkpoint write /tmp/ck && python3 tests/ref/check_ckpt_h5py.py /tmp/ck

Prints every dataset's name, shape and dtype, whether its values are the expected ones (element
i of tensor `id` at step S has the f32 bits (uint32) splitmix64((S << 40) ^ (id << 32) ^ i), as
fill_values in tests/mpi/test_checkpoint.c; blob bytes as mode_write there) and whether its addc_checksum attribute equals the sum
over elements of splitmix64(i ^ (bits << 32)) mod 2^64 (distributed/checkpoint.c), then the
root attributes."""
import os
import re
import sys

import h5py
import numpy as np

# name -> id, in the order of `tensors` in tests/mpi/test_checkpoint.c
TENSORS = {"net/conv.weight": 0, "net/conv.bias": 1, "net/one_row": 2, "net/empty": 3, "opt/m/emb": 4}
# blob name -> its bytes (mode_write in tests/mpi/test_checkpoint.c)
BLOBS = {"state/rng": lambda n: ((np.arange(n) * 3 + 7) % 256).astype(np.uint8)}


def splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def expected_bits(step, tid, n):
    i = np.arange(n, dtype=np.uint64)
    return splitmix64((np.uint64(step) << np.uint64(40)) ^ (np.uint64(tid) << np.uint64(32)) ^ i).astype(np.uint32)


def checksum(bits):
    """bits: uint32 (f32 bits) or uint8 (blob bytes), flattened in row-major order."""
    i = np.arange(bits.size, dtype=np.uint64)
    return int(splitmix64(i ^ (bits.reshape(-1).astype(np.uint64) << np.uint64(32))).sum(dtype=np.uint64))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_ckpt_h5py.py CHECKPOINT_DIR_OR_FILE")
    path = sys.argv[1]
    if os.path.isdir(path):
        with open(os.path.join(path, "latest")) as f:
            path = os.path.join(path, f.read().strip())
    step = int(re.search(r"step-(\d+)\.h5$", path).group(1))
    print(f"{path} (h5py {h5py.version.version}, HDF5 {h5py.version.hdf5_version}), step {step}")
    bad = 0
    with np.errstate(over="ignore"), h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in sorted(names):
            d = f[name]
            data = d[()]
            stored = int(d.attrs["addc_checksum"])
            if d.dtype == np.float32:
                bits = data.view(np.uint32).reshape(-1)
                tid = TENSORS.get(name)
                values_ok = tid is not None and np.array_equal(bits, expected_bits(step, tid, bits.size))
                what = "values match" if values_ok else "VALUES DIFFER"
            else:
                bits = data.reshape(-1)
                values_ok = name in BLOBS and np.array_equal(bits, BLOBS[name](bits.size))
                what = "bytes match" if values_ok else "BYTES DIFFER"
            sum_ok = checksum(bits) == stored
            bad += (not values_ok) + (not sum_ok)
            print(f"  {name:18s} shape {str(d.shape):16s} {str(d.dtype):8s} {what}; "
                  f"addc_checksum {stored:016x} {'recomputed equal' if sum_ok else 'RECOMPUTED DIFFERENT'}")
        for k in sorted(f.attrs):
            v = f.attrs[k]
            print(f"  attribute {k} = {v.decode()!r}" if isinstance(v, bytes) else f"  attribute {k} = {v}")
    print("ok" if bad == 0 else f"{bad} problems")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
