// Collectives of the MPI communicator against float64 references computed locally from every
// rank's (reproducible) inputs. ctest runs this binary with 1, 2, 3 and 4 ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "parallel/comm_mpi.h"
#include "tests/parallel/mpi_test_util.h"

namespace tessera::parallel {
namespace {

using tessera::testing::contains;
using tessera::testing::f32_tensor;
using tessera::testing::input_of;
using tessera::testing::rel_error;
using tessera::testing::shared_seed;
using tessera::testing::values;

class Comm : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = shared_seed();
    comm_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", 60.0);
    n_ = comm_->size();
    r_ = comm_->rank();
  }
  // Sum over ranks of input_of(r, n) in float64.
  std::vector<double> sum_of_inputs(int64_t n, int stream = 0) const {
    std::vector<double> s(static_cast<size_t>(n), 0.0);
    for (int r = 0; r < n_; ++r) {
      const auto v = input_of(seed_, r, n, stream);
      for (int64_t i = 0; i < n; ++i) s[i] += v[i];
    }
    return s;
  }

  uint64_t seed_ = 0;
  std::unique_ptr<MpiCommunicator> comm_;
  int n_ = 1;
  int r_ = 0;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(Comm, Identity) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  EXPECT_EQ(comm_->name(), "world");
  ASSERT_EQ(static_cast<int>(comm_->world_ranks().size()), n_);
  for (int r = 0; r < n_; ++r) EXPECT_EQ(comm_->world_ranks()[r], r);
  EXPECT_TRUE(contains(comm_->describe(), "group 'world' (world ranks 0"));
}

TEST_F(Comm, AllReduceSumF32) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int64_t n = 1031;
  Tensor t = f32_tensor(input_of(seed_, r_, n));
  comm_->all_reduce(t, ReduceOp::sum);
  EXPECT_LT(rel_error(t, sum_of_inputs(n)), 1e-6);
}

TEST_F(Comm, AllReduceAvgAndMax) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int64_t n = 517;
  Tensor avg = f32_tensor(input_of(seed_, r_, n));
  comm_->all_reduce(avg, ReduceOp::avg);
  auto ref = sum_of_inputs(n);
  for (double& x : ref) x /= n_;
  EXPECT_LT(rel_error(avg, ref), 1e-6);

  Tensor mx = f32_tensor(input_of(seed_, r_, n));
  comm_->all_reduce(mx, ReduceOp::max);
  std::vector<float> want(static_cast<size_t>(n), -INFINITY);
  for (int r = 0; r < n_; ++r) {
    const auto v = input_of(seed_, r, n);
    for (int64_t i = 0; i < n; ++i) want[i] = std::max(want[i], v[i]);
  }
  EXPECT_EQ(values(mx), want);
}

TEST_F(Comm, AllReduceI32) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int64_t n = 100;
  auto ints = [&](int r) {
    std::vector<int32_t> v(n);
    const auto f = input_of(seed_, r, n);
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<int32_t>(std::lround(f[i] * 1000));
    return v;
  };
  Tensor sum = Tensor::empty({n}, DType::i32), mx = Tensor::empty({n}, DType::i32);
  std::copy_n(ints(r_).data(), n, sum.data<int32_t>());
  std::copy_n(ints(r_).data(), n, mx.data<int32_t>());
  comm_->all_reduce(sum, ReduceOp::sum);
  comm_->all_reduce(mx, ReduceOp::max);
  std::vector<int32_t> want_sum(n, 0), want_max(n, INT32_MIN);
  for (int r = 0; r < n_; ++r) {
    const auto v = ints(r);
    for (int64_t i = 0; i < n; ++i) {
      want_sum[i] += v[i];
      want_max[i] = std::max(want_max[i], v[i]);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(sum.data<int32_t>()[i], want_sum[i]) << i;
    EXPECT_EQ(mx.data<int32_t>()[i], want_max[i]) << i;
  }
  EXPECT_TRUE(contains(error_of([&] { comm_->all_reduce(sum, ReduceOp::avg); }),
                       "avg of t (i32) is not defined"));
}

// bf16 and f16 reduce in f32 and round once: within one rounding of the float64 reference.
TEST_F(Comm, AllReduceSixteenBit) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int64_t n = 300;
  for (DType d : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(d));
    auto rounded = [&](int r) {
      auto v = input_of(seed_, r, n);
      for (float& x : v) x = d == DType::bf16 ? to_float(to_bf16(x)) : to_float(to_f16(x));
      return v;
    };
    Tensor t = Tensor::empty({n}, d);
    const auto mine = rounded(r_);
    for (int64_t i = 0; i < n; ++i) {
      if (d == DType::bf16)
        t.data<bf16>()[i] = to_bf16(mine[i]);
      else
        t.data<f16>()[i] = to_f16(mine[i]);
    }
    comm_->all_reduce(t, ReduceOp::sum);
    std::vector<double> ref(n, 0.0);
    for (int r = 0; r < n_; ++r) {
      const auto v = rounded(r);
      for (int64_t i = 0; i < n; ++i) ref[i] += v[i];
    }
    std::vector<float> got(n);
    for (int64_t i = 0; i < n; ++i) {
      got[i] = d == DType::bf16 ? to_float(t.data<bf16>()[i]) : to_float(t.data<f16>()[i]);
    }
    EXPECT_LT(rel_error(f32_tensor(got), ref), d == DType::bf16 ? 4e-3 : 5e-4);
  }
}

TEST_F(Comm, ReduceScatterAllGatherRoundTrip) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int64_t m = 129;  // elements per rank
  const int64_t full = m * n_;
  const auto sum = sum_of_inputs(full);

  Tensor in = f32_tensor(input_of(seed_, r_, full));
  Tensor shard = Tensor::empty({m}, DType::f32);
  tessera::testing::poison(shard);
  comm_->reduce_scatter(shard, in, ReduceOp::sum);
  const std::vector<double> mine(sum.begin() + r_ * m, sum.begin() + (r_ + 1) * m);
  EXPECT_LT(rel_error(shard, mine), 1e-6);

  Tensor gathered = Tensor::empty({full}, DType::f32);
  tessera::testing::poison(gathered);
  comm_->all_gather(gathered, shard);
  EXPECT_LT(rel_error(gathered, sum), 1e-6);

  // In place, as ZeRO uses them: the shard is chunk rank() of the flat buffer.
  Tensor flat = f32_tensor(input_of(seed_, r_, full));
  Tensor own = flat.narrow(r_ * m, m);
  comm_->reduce_scatter(own, flat, ReduceOp::avg);
  std::vector<double> mine_avg = mine;
  for (double& x : mine_avg) x /= n_;
  EXPECT_LT(rel_error(own, mine_avg), 1e-6);
  comm_->all_gather(flat, own);
  std::vector<double> avg = sum;
  for (double& x : avg) x /= n_;
  EXPECT_LT(rel_error(flat, avg), 1e-6);
}

TEST_F(Comm, ShapeErrorsNameTheNumbers) {
  Tensor in = Tensor::zeros({10}, DType::f32), out = Tensor::zeros({3}, DType::f32);
  if (n_ * 3 != 10) {
    EXPECT_TRUE(contains(error_of([&] { comm_->reduce_scatter(out, in); }),
                         "in has 10 elements, expected size"));
  }
  EXPECT_TRUE(contains(error_of([&] { comm_->broadcast(in, n_); }), "root"));
  EXPECT_TRUE(contains(error_of([&] { comm_->all_gather(in, Tensor()); }), "undefined"));
  EXPECT_FALSE(comm_->poisoned());  // argument errors do not poison
}

TEST_F(Comm, BroadcastFromLastRank) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int root = n_ - 1;  // non-zero whenever there is more than one rank
  const int64_t n = 333;
  Tensor t = f32_tensor(input_of(seed_, r_, n));
  comm_->broadcast(t, root);
  EXPECT_EQ(values(t), input_of(seed_, root, n));

  Tensor b = Tensor::empty({7}, DType::bf16);  // data movement takes any dtype
  for (int i = 0; i < 7; ++i) b.data<bf16>()[i] = to_bf16(static_cast<float>(r_ * 10 + i));
  comm_->broadcast(b, root);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(to_float(b.data<bf16>()[i]), root * 10 + i);
}

TEST_F(Comm, P2PRingExchange) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int right = (r_ + 1) % n_, left = (r_ + n_ - 1) % n_;
  const int64_t n = 257;
  Tensor a = f32_tensor(input_of(seed_, r_, n, 1)), b = f32_tensor(input_of(seed_, r_, 5, 2));
  Tensor x = Tensor::empty({n}, DType::f32), y = Tensor::empty({5}, DType::f32);
  tessera::testing::poison(x);
  tessera::testing::poison(y);
  // Two messages to one peer arrive in order; recvs posted before sends in the same group.
  comm_->p2p(
      {P2POp::recv(x, left), P2POp::send(a, right), P2POp::send(b, right), P2POp::recv(y, left)});
  EXPECT_EQ(values(x), input_of(seed_, left, n, 1));
  EXPECT_EQ(values(y), input_of(seed_, left, 5, 2));
}

TEST_F(Comm, AsyncHandlesWaitedInReverse) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int64_t n = 4099, m = 64;
  Tensor a = f32_tensor(input_of(seed_, r_, n));
  Tensor shard = f32_tensor(input_of(seed_, r_, m, 3));
  Tensor gathered = Tensor::empty({m * n_}, DType::f32);
  CommHandle h1 = comm_->all_reduce_async(a, ReduceOp::sum);
  CommHandle h2 = comm_->all_gather_async(gathered, shard);
  CommHandle h3 = comm_->barrier_async();
  // Overlap: "compute" while the ops progress through test().
  double busy = 0;
  for (int i = 0; i < 1000 && !h3.test(); ++i) busy += std::sqrt(static_cast<double>(i));
  EXPECT_GE(busy, 0.0);
  h3.wait();
  h2.wait();
  h1.wait();
  EXPECT_TRUE(h1.done() && h2.done() && h3.done());
  EXPECT_LT(rel_error(a, sum_of_inputs(n)), 1e-6);
  const std::vector<float> got = values(gathered);
  for (int r = 0; r < n_; ++r) {
    EXPECT_EQ(std::vector<float>(got.begin() + r * m, got.begin() + (r + 1) * m),
              input_of(seed_, r, m, 3));
  }
  h1.wait();  // waiting twice is fine
  EXPECT_TRUE(CommHandle().done());
}

TEST_F(Comm, StatsFollowTheRingFormulas) {
  const int64_t n = 1000, m = 16;
  Tensor t = Tensor::zeros({n}, DType::f32);
  Tensor h = Tensor::zeros({n}, DType::bf16);
  Tensor shard = Tensor::zeros({m}, DType::f32), full = Tensor::zeros({m * n_}, DType::f32);
  comm_->reset_stats();
  comm_->all_reduce(t);
  comm_->all_reduce(h);
  comm_->reduce_scatter(shard, full);
  comm_->all_gather(full, shard);
  comm_->broadcast(t, 0);
  const int right = (r_ + 1) % n_, left = (r_ + n_ - 1) % n_;
  Tensor recv = Tensor::zeros({m}, DType::f32);
  comm_->p2p({P2POp::send(shard, right), P2POp::recv(recv, left)});
  comm_->barrier();

  const CommStats& s = comm_->stats();
  const double N = n_;
  const double k = (N - 1) / N;
  EXPECT_EQ(s[CommKind::all_reduce].calls, 2u);
  EXPECT_EQ(s[CommKind::all_reduce].payload_bytes, 4000u + 2000u);
  EXPECT_DOUBLE_EQ(s[CommKind::all_reduce].wire_bytes, 2 * k * 6000);
  EXPECT_EQ(s[CommKind::reduce_scatter].payload_bytes, 4u * m * n_);
  EXPECT_DOUBLE_EQ(s[CommKind::reduce_scatter].wire_bytes, k * 4 * m * n_);
  EXPECT_DOUBLE_EQ(s[CommKind::all_gather].wire_bytes, k * 4 * m * n_);
  EXPECT_DOUBLE_EQ(s[CommKind::broadcast].wire_bytes, n_ == 1 ? 0.0 : 4000.0);
  EXPECT_EQ(s[CommKind::p2p].payload_bytes, 4u * m);
  EXPECT_DOUBLE_EQ(s[CommKind::p2p].wire_bytes, n_ == 1 ? 0.0 : 4.0 * m);
  EXPECT_EQ(s[CommKind::barrier].calls, 1u);
  EXPECT_EQ(s.total_calls(), 7u);
  EXPECT_EQ(comm_->next_seq(), 7u);
  EXPECT_TRUE(contains(s.str(), "all_reduce: 2 calls"));
}

// Every rank alone in MPI_COMM_SELF: the 1-rank short-circuit, never touching MPI's collectives.
TEST(CommSelf, OneRankShortCircuits) {
  MpiCommunicator self(MPI_COMM_SELF, "tp", 5.0);
  ASSERT_EQ(self.size(), 1);
  Tensor t = f32_tensor({1.5f, -2.0f, 3.0f});
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
    self.all_reduce(t, op);
    EXPECT_EQ(values(t), (std::vector<float>{1.5f, -2.0f, 3.0f})) << reduce_op_name(op);
  }
  Tensor out = Tensor::empty({3}, DType::f32);
  self.reduce_scatter(out, t);
  EXPECT_EQ(values(out), values(t));
  Tensor g = Tensor::empty({3}, DType::f32);
  self.all_gather(g, t);
  EXPECT_EQ(values(g), values(t));
  self.broadcast(t, 0);
  Tensor r = Tensor::empty({3}, DType::f32);
  self.p2p({P2POp::send(t, 0), P2POp::recv(r, 0)});
  EXPECT_EQ(values(r), values(t));
  self.barrier();
  EXPECT_TRUE(self.all_reduce_async(t).done());
  EXPECT_EQ(self.stats().total_calls(), 9u);
  EXPECT_EQ(self.stats().total_wire_bytes(), 0.0);
  EXPECT_EQ(self.world_ranks().size(), 1u);
}

// Split the world into even and odd ranks: each half reduces on its own.
TEST_F(Comm, SplitGroups) {
  auto half = MpiCommunicator::split(MPI_COMM_WORLD, r_ % 2, r_, "dp", 60.0);
  ASSERT_NE(half, nullptr);
  EXPECT_EQ(half->name(), "dp");
  std::vector<int> members;
  for (int r = r_ % 2; r < n_; r += 2) members.push_back(r);
  EXPECT_EQ(half->world_ranks(), members);
  Tensor t = Tensor::empty({1}, DType::i32);
  t.data<int32_t>()[0] = r_;
  half->all_reduce(t);
  int want = 0;
  for (int r : members) want += r;
  EXPECT_EQ(t.data<int32_t>()[0], want);
  auto none = MpiCommunicator::split(MPI_COMM_WORLD, r_ == 0 ? 0 : MPI_UNDEFINED, 0, "x", 60.0);
  EXPECT_EQ(none != nullptr, r_ == 0);
}

}  // namespace
}  // namespace tessera::parallel
