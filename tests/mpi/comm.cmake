# tests/mpi/comm.cmake: runs of test_comm (distributed/comm): without a launcher (the solo
# communicator, label "unit"), under mpirun on 1 to 4 ranks, once with small chunks so counts are
# split over several MPI calls, and the watchdog test (a hung rank must end the job, named).
add_test(NAME test_comm_solo COMMAND test_comm)
set_tests_properties(test_comm_solo PROPERTIES LABELS "unit" ENVIRONMENT "ADDC_THREADS=1")
foreach(np 1 2 3 4)
  addc_mpi_test(test_comm_np${np} ${np} $<TARGET_FILE:test_comm>)
  set_property(TEST test_comm_np${np} APPEND PROPERTY ENVIRONMENT "ADDC_THREADS=1")
endforeach()
addc_mpi_test(test_comm_np3_chunk7 3 $<TARGET_FILE:test_comm>)
set_property(TEST test_comm_np3_chunk7 APPEND PROPERTY ENVIRONMENT "ADDC_THREADS=1;ADDC_COMM_CHUNK=7")
add_test(NAME test_comm_hang COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/comm_hang.sh $<TARGET_FILE:test_comm>)
set_tests_properties(test_comm_hang PROPERTIES LABELS "mpi" PROCESSORS 3 TIMEOUT 90
                     ENVIRONMENT "${ADDC_MPI_ENV};ADDC_THREADS=1")
