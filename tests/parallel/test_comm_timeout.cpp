// Timeouts turn hangs into Errors that name the missing ranks. ctest runs this binary with 3
// ranks. Rank 2 plays the hung rank: it sleeps past the 1 s timeout instead of joining, then joins
// late, so the abandoned collective still completes and every rank exits cleanly (a truly dead
// rank is the launcher's business: it reports the Error and calls MPI_Abort).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "parallel/comm_mpi.h"
#include "tests/parallel/mpi_test_util.h"

namespace tessera::parallel {
namespace {

using tessera::testing::contains;

class Timeout : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", 60.0);
    if (world_->size() != 3) GTEST_SKIP() << "needs exactly 3 ranks";
  }
  std::unique_ptr<MpiCommunicator> world_;
};

TEST_F(Timeout, AllReduceNamesTheRankThatNeverArrived) {
  auto dp = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "dp", 1.0);
  const int me = dp->rank();
  Tensor t = Tensor::zeros({4096}, DType::f32);
  dp->all_reduce(t);  // op #0: everyone arrives
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(me + 1);
  world_->barrier();

  if (me == 2) {
    std::this_thread::sleep_for(std::chrono::milliseconds(4000));  // "hung"
    dp->all_reduce(t);  // late: ranks 0 and 1 gave up, but their requests are still posted
    EXPECT_EQ(t.data<float>()[0], 6.0f);
    EXPECT_FALSE(dp->poisoned());
  } else {
    const auto start = std::chrono::steady_clock::now();
    std::string message;
    try {
      dp->all_reduce(t);
    } catch (const Error& e) {
      message = e.what();
    }
    if (me == 0) std::fprintf(stderr, "rank 0 caught: %s\n", message.c_str());
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_TRUE(contains(message,
                         "collective timeout: all_reduce of 4096 f32 (16 KiB) in group 'dp' "
                         "(world ranks 0,1,2), op #1, waited "))
        << message;
    EXPECT_TRUE(contains(message, "ranks that never arrived: 2")) << message;
    EXPECT_GE(waited, 1.0);
    EXPECT_LT(
        waited,
        3.5);  // timeout + survey grace (0.25 s) + slack for a loaded machine, before rank 2 wakes
    EXPECT_TRUE(dp->poisoned());
    std::string again;
    try {
      dp->barrier();
    } catch (const Error& e) {
      again = e.what();
    }
    EXPECT_TRUE(contains(again, "communicator unusable after timeout")) << again;
    EXPECT_TRUE(contains(again, "op #1")) << again;
  }
  world_->barrier();  // ranks 0 and 1 progress MPI here while rank 2 completes the late op
  dp.reset();         // drains the abandoned all_reduce (complete by now) and frees the group
  world_->barrier();
}

TEST_F(Timeout, PointToPointNamesTheSilentPeer) {
  auto pp = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "pp", 0.5);
  if (pp->rank() == 0) {
    Tensor x = Tensor::zeros({256}, DType::f32);
    std::string message;
    try {
      pp->p2p({P2POp::recv(x, 1)});  // rank 1 never sends
    } catch (const Error& e) {
      message = e.what();
    }
    std::fprintf(stderr, "rank 0 caught: %s\n", message.c_str());
    EXPECT_TRUE(contains(message, "p2p timeout: p2p (recv 1 KiB from 1) in group 'pp'")) << message;
    EXPECT_TRUE(contains(message, "ranks that never arrived: 1")) << message;
    EXPECT_FALSE(contains(message, "never arrived: 1,2")) << message;  // only the peer matters
  }
  world_->barrier();
  pp.reset();  // the cancelled recv is freed: nothing left to drain
  world_->barrier();
}

// A fresh group after a timeout works (groups are created again, as the Error advises).
TEST_F(Timeout, FreshGroupAfterwardsWorks) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp", 5.0);
  Tensor t = Tensor::empty({3}, DType::f32);
  for (int i = 0; i < 3; ++i) t.data<float>()[i] = static_cast<float>(dp.rank());
  dp.all_reduce(t, ReduceOp::max);
  EXPECT_EQ(t.data<float>()[2], 2.0f);
}

}  // namespace
}  // namespace tessera::parallel
