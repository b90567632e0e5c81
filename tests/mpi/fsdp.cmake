# tests/mpi/fsdp.cmake: runs of test_fsdp (distributed/fsdp) under mpirun on 2, 3 and 4 ranks
# (3: a world size that divides no unit, so every shard is padded). The world-1 checks are the
# unit test test_fsdp_solo (no launcher).
foreach(np 2 3 4)
  addc_mpi_test(test_fsdp_np${np} ${np} $<TARGET_FILE:test_fsdp>)
  set_property(TEST test_fsdp_np${np} APPEND PROPERTY ENVIRONMENT "ADDC_THREADS=1")
endforeach()
