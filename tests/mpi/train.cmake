# `addc train` on ranks, end to end (tests/mpi/test_train_dist.c starts mpirun itself).
add_test(NAME test_train_dist COMMAND test_train_dist)
set_tests_properties(test_train_dist PROPERTIES LABELS "mpi" SKIP_RETURN_CODE 77 PROCESSORS 2 TIMEOUT 900
                     ENVIRONMENT "${ADDC_MPI_ENV}")
