// GoogleTest main for the multi-rank tests that ctest runs under mpirun: every rank runs every
// test; rank 0 prints GoogleTest's usual output, the other ranks print only their failures
// ("[rank 2] ..."); every rank exits nonzero when any rank failed, so mpirun (and ctest) fails.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <string>
#include <vector>

#include "parallel/mpi_session.h"

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.message());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] [  FAILED  ] %s.%s\n", rank_, info.test_suite_name(),
                   info.name());
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  tessera::parallel::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (mpi.world_rank() != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(mpi.world_rank()));
  }
  const int local = RUN_ALL_TESTS() != 0 ? 1 : 0;
  std::vector<int> all(static_cast<size_t>(mpi.world_size()));
  MPI_Allgather(&local, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::string failed;
  for (int r = 0; r < mpi.world_size(); ++r) {
    if (!all[static_cast<size_t>(r)]) continue;
    if (!failed.empty()) failed += ",";
    failed += std::to_string(r);
  }
  if (mpi.world_rank() == 0) {
    std::fprintf(stderr, "%d ranks: %s\n", mpi.world_size(),
                 failed.empty() ? "all passed" : ("FAILED on ranks " + failed).c_str());
  }
  return failed.empty() ? 0 : 1;
}
