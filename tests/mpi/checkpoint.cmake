# distributed/checkpoint under mpirun: the same-world test on 1, 2 and 4 ranks; a checkpoint
# written on 4 ranks and read on 2 and on 1 (a fixture: the write runs first); the kill loop
# (20 writers on 2 ranks killed with SIGKILL mid-run, every committed checkpoint checked after each).
foreach(np 1 2 4)
  addc_mpi_test(mpi_checkpoint_np${np} ${np} $<TARGET_FILE:test_checkpoint>)
endforeach()

set(ADDC_CKPT_CROSS_DIR ${CMAKE_BINARY_DIR}/mpi_checkpoint_cross)
addc_mpi_test(mpi_checkpoint_cross_write_np4 4 $<TARGET_FILE:test_checkpoint> write ${ADDC_CKPT_CROSS_DIR})
set_tests_properties(mpi_checkpoint_cross_write_np4 PROPERTIES FIXTURES_SETUP addc_ckpt_cross)
foreach(np 2 1)
  addc_mpi_test(mpi_checkpoint_cross_read_np${np} ${np} $<TARGET_FILE:test_checkpoint> read ${ADDC_CKPT_CROSS_DIR})
  set_tests_properties(mpi_checkpoint_cross_read_np${np} PROPERTIES FIXTURES_REQUIRED addc_ckpt_cross)
endforeach()

add_test(NAME mpi_checkpoint_kill_loop
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/ckpt_kill_loop.sh $<TARGET_FILE:test_checkpoint> ${ADDC_MPIRUN})
set_tests_properties(mpi_checkpoint_kill_loop PROPERTIES LABELS "mpi" PROCESSORS 2 TIMEOUT 180
                     ENVIRONMENT "${ADDC_MPI_ENV}")
