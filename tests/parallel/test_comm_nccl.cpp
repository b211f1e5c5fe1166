// NCCL communicators on CUDA tensors (CUDA builds only). Skips without a CUDA device. With one
// rank every collective takes the 1-rank path (NCCL's init and teardown still run); with as many
// ranks as GPUs (mpirun -np <GPUs>) every collective runs through NCCL.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "parallel/comm_nccl.h"
#include "tests/parallel/mpi_test_util.h"

namespace tessera::parallel {
namespace {

using tessera::testing::f32_tensor;
using tessera::testing::input_of;
using tessera::testing::rel_error;
using tessera::testing::shared_seed;
using tessera::testing::values;

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = shared_seed();
    int devices = 0;
    int world = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    // Every rank decides the same way, so that no rank is left alone in a collective.
    int ok = cuda_available() && cudaGetDeviceCount(&devices) == cudaSuccess && devices >= world;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok) {
      // scripts/gpu_check.sh sets TESSERA_REQUIRE_CUDA on the GPU machine: a failure there.
      if (std::getenv("TESSERA_REQUIRE_CUDA")) FAIL() << "TESSERA_REQUIRE_CUDA set, no GPU";
      GTEST_SKIP() << "needs one CUDA device per rank";
    }
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    device_ = Device::cuda(rank);
    comm_ = std::make_unique<NcclCommunicator>(
        std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", 60.0), rank, 60.0);
    n_ = comm_->size();
    r_ = comm_->rank();
  }
  Tensor on_gpu(const std::vector<float>& v) const { return f32_tensor(v).to(device_); }
  std::vector<double> sum_of_inputs(int64_t n, int stream = 0) const {
    std::vector<double> s(static_cast<size_t>(n), 0.0);
    for (int r = 0; r < n_; ++r) {
      const auto v = input_of(seed_, r, n, stream);
      for (int64_t i = 0; i < n; ++i) s[i] += v[i];
    }
    return s;
  }

  uint64_t seed_ = 0;
  Device device_;
  std::unique_ptr<NcclCommunicator> comm_;
  int n_ = 1, r_ = 0;
};

TEST_F(Nccl, AllCollectives) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int64_t n = 1024, m = 96;
  Tensor t = on_gpu(input_of(seed_, r_, n));
  comm_->all_reduce(t, ReduceOp::sum);
  EXPECT_LT(rel_error(t.to(Device::cpu()), sum_of_inputs(n)), 1e-6);

  Tensor a = on_gpu(input_of(seed_, r_, n));
  comm_->all_reduce(a, ReduceOp::avg);
  auto avg = sum_of_inputs(n);
  for (double& x : avg) x /= n_;
  EXPECT_LT(rel_error(a.to(Device::cpu()), avg), 1e-6);

  Tensor in = on_gpu(input_of(seed_, r_, m * n_, 1));
  Tensor shard = Tensor::zeros({m}, DType::f32, device_);
  comm_->reduce_scatter(shard, in);
  const auto full = sum_of_inputs(m * n_, 1);
  EXPECT_LT(rel_error(shard.to(Device::cpu()),
                      std::vector<double>(full.begin() + r_ * m, full.begin() + (r_ + 1) * m)),
            1e-6);
  Tensor gathered = Tensor::zeros({m * n_}, DType::f32, device_);
  comm_->all_gather(gathered, shard);
  EXPECT_LT(rel_error(gathered.to(Device::cpu()), full), 1e-6);

  Tensor b = on_gpu(input_of(seed_, r_, 77, 2));
  comm_->broadcast(b, n_ - 1);
  EXPECT_EQ(values(b.to(Device::cpu())), input_of(seed_, n_ - 1, 77, 2));

  const int right = (r_ + 1) % n_, left = (r_ + n_ - 1) % n_;
  Tensor send = on_gpu(input_of(seed_, r_, 50, 3));
  Tensor recv = Tensor::zeros({50}, DType::f32, device_);
  comm_->p2p({P2POp::send(send, right), P2POp::recv(recv, left)});
  EXPECT_EQ(values(recv.to(Device::cpu())), input_of(seed_, left, 50, 3));

  CommHandle h1 = comm_->all_reduce_async(t);
  CommHandle h2 = comm_->barrier_async();
  h2.wait();
  h1.wait();
  EXPECT_EQ(comm_->stats()[CommKind::all_reduce].calls, 3u);
}

TEST_F(Nccl, RejectsCpuTensors) {
  Tensor cpu = Tensor::zeros({4}, DType::f32);
  try {
    comm_->all_reduce(cpu);
    ADD_FAILURE() << "no Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("NCCL communicator 'world'"), std::string::npos);
  }
}

}  // namespace
}  // namespace tessera::parallel
