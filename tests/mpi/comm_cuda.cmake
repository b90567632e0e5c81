# tests/mpi/comm_cuda.cmake: runs of test_comm_cuda (distributed/comm on CUDA device buffers),
# label "cuda": without a launcher (the solo communicator: device copies), under mpirun on one rank
# (NCCL; one rank because NCCL takes one GPU per rank and the lent machines have one), and the two
# device watchdog tests (a collective hung on the device must end the job, named: seen in
# comm_wait, and seen by the watchdog thread while the main thread waits in a copy to the host).
# Every run exits 77 (skipped) without a GPU.
add_test(NAME test_comm_cuda_solo COMMAND test_comm_cuda)
set_tests_properties(test_comm_cuda_solo PROPERTIES LABELS "cuda" SKIP_RETURN_CODE 77 ENVIRONMENT "ADDC_THREADS=1")
add_test(NAME test_comm_cuda_np1 COMMAND ${ADDC_MPIRUN} -np 1 $<TARGET_FILE:test_comm_cuda>)
set_tests_properties(test_comm_cuda_np1 PROPERTIES LABELS "cuda" SKIP_RETURN_CODE 77 PROCESSORS 1
                     ENVIRONMENT "${ADDC_MPI_ENV};ADDC_THREADS=1")
foreach(mode wait blocked)
  add_test(NAME test_comm_cuda_hang_${mode}
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/comm_cuda_hang.sh $<TARGET_FILE:test_comm_cuda> ${mode})
  set_tests_properties(test_comm_cuda_hang_${mode} PROPERTIES LABELS "cuda" SKIP_RETURN_CODE 77 TIMEOUT 120
                       ENVIRONMENT "${ADDC_MPI_ENV};ADDC_THREADS=1")
endforeach()
