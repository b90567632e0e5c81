# `addc train` on ranks, end to end (tests/mpi/test_train_dist.c starts mpirun itself).
add_test(NAME test_train_dist COMMAND test_train_dist)
set_tests_properties(test_train_dist PROPERTIES LABELS "mpi" SKIP_RETURN_CODE 77 PROCESSORS 2 TIMEOUT 900
                     ENVIRONMENT "${ADDC_MPI_ENV}")
# The same on the GPU (device=cuda): 1 and 2 ranks, against the CPU, and the exact resume on 2 ranks.
# Skips without 2 GPUs (NCCL: one per rank); the host emulator (tests/cuemu) lets ranks share one.
add_test(NAME test_train_dist_cuda COMMAND test_train_dist)
set_tests_properties(test_train_dist_cuda PROPERTIES LABELS "cuda" SKIP_RETURN_CODE 77 PROCESSORS 2 TIMEOUT 1200
                     ENVIRONMENT "${ADDC_MPI_ENV};ADDC_TEST_DEVICE=cuda")
