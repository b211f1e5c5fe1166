// ProcessGrid as a pure function (Megatron order), then ParallelContext built over MPI_COMM_WORLD.
// ctest runs this binary with 4 and 8 ranks.
#include <gtest/gtest.h>

#include "parallel/context.h"
#include "parallel/mpi_session.h"
#include "tests/parallel/mpi_test_util.h"

namespace tessera::parallel {
namespace {

using tessera::testing::contains;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Grid, MegatronOrder222) {
  const ProcessGrid g({.tp = 2, .pp = 2, .dp = 2}, 8);
  // world_rank = tp + 2 * (dp + 2 * pp)
  const GridCoord want[8] = {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {1, 1, 0},
                             {0, 0, 1}, {1, 0, 1}, {0, 1, 1}, {1, 1, 1}};
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(g.coord_of(r), want[r]) << r;
    EXPECT_EQ(g.rank_of(want[r]), r);
  }
  EXPECT_EQ(g.tp_group(0), (std::vector<int>{0, 1}));
  EXPECT_EQ(g.tp_group(6), (std::vector<int>{6, 7}));
  EXPECT_EQ(g.dp_group(0), (std::vector<int>{0, 2}));
  EXPECT_EQ(g.dp_group(5), (std::vector<int>{5, 7}));
  EXPECT_EQ(g.pp_group(0), (std::vector<int>{0, 4}));
  EXPECT_EQ(g.pp_group(3), (std::vector<int>{3, 7}));
  EXPECT_EQ(g.embedding_group(2), (std::vector<int>{2, 6}));
  EXPECT_EQ(g.embedding_group(7), (std::vector<int>{3, 7}));
  EXPECT_TRUE(g.is_first_stage(3));
  EXPECT_TRUE(g.is_last_stage(4));
  EXPECT_EQ(g.str(), "tp=2 × pp=2 × dp=2");
}

TEST(Grid, EveryRankInExactlyOneGroupOfEachKind) {
  const ProcessGrid g({.tp = 2, .pp = 3, .dp = 2}, 12);
  for (int r = 0; r < 12; ++r) {
    for (const auto& group : {g.tp_group(r), g.dp_group(r), g.pp_group(r)}) {
      EXPECT_NE(std::find(group.begin(), group.end(), r), group.end());
      for (int m : group) {  // membership is symmetric
        EXPECT_EQ(g.tp_group(r) == group   ? g.tp_group(m)
                  : g.dp_group(r) == group ? g.dp_group(m)
                                           : g.pp_group(m),
                  group);
      }
    }
  }
  EXPECT_EQ(g.tp_group(5).size(), 2u);
  EXPECT_EQ(g.dp_group(5).size(), 2u);
  EXPECT_EQ(g.pp_group(5).size(), 3u);
  // Middle stages hold no embedding; first and last share one.
  EXPECT_TRUE(g.embedding_group(g.rank_of({1, 1, 1})).empty());
  EXPECT_EQ(g.embedding_group(g.rank_of({1, 1, 0})),
            (std::vector<int>{g.rank_of({1, 1, 0}), g.rank_of({1, 1, 2})}));
}

TEST(Grid, PipelineOfOneEmbedsAlone) {
  const ProcessGrid g({.tp = 2, .pp = 1, .dp = 3}, 6);
  for (int r = 0; r < 6; ++r) EXPECT_EQ(g.embedding_group(r), std::vector<int>{r});
}

TEST(Grid, MismatchNamesTheNumbers) {
  const std::string e = error_of([] { ProcessGrid({.tp = 2, .pp = 2, .dp = 2}, 4); });
  EXPECT_TRUE(contains(e, "parallel: tp=2 × pp=2 × dp=2 = 8 but mpirun started 4 ranks")) << e;
  EXPECT_TRUE(contains(error_of([] { ProcessGrid({.tp = 3, .pp = 1, .dp = 0}, 4); }),
                       "does not divide the 4 ranks"));
  EXPECT_TRUE(contains(error_of([] { ProcessGrid({.tp = 0, .pp = 1, .dp = 1}, 1); }),
                       "tp and pp must be >= 1"));
  EXPECT_EQ(ProcessGrid({.tp = 2, .pp = 1, .dp = 0}, 8).dp(), 4);
  const ProcessGrid g({.tp = 2, .pp = 1, .dp = 1}, 2);
  EXPECT_TRUE(contains(error_of([&] { g.coord_of(2); }), "rank 2 outside the world of 2"));
}

int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// Every rank gets the same Error (no rank is left waiting in a split).
TEST(Context, MismatchedWorldThrowsOnEveryRank) {
  const int n = world_size();
  const std::string e = error_of([&] { make_mpi_context({.tp = n, .pp = 2, .dp = 1}); });
  EXPECT_TRUE(contains(e, "but mpirun started " + std::to_string(n) + " ranks")) << e;
}

// The communicators' members match the grid's groups, and each reduces within its group.
void check_context(GridShape shape) {
  SCOPED_TRACE("tp=" + std::to_string(shape.tp) + " pp=" + std::to_string(shape.pp));
  ParallelContext ctx = make_mpi_context(shape, 60.0);
  const ProcessGrid& g = ctx.grid();
  const int me = ctx.world_rank();
  EXPECT_EQ(ctx.world().size(), g.world_size());
  EXPECT_EQ(ctx.tp().world_ranks(), g.tp_group(me));
  EXPECT_EQ(ctx.dp().world_ranks(), g.dp_group(me));
  EXPECT_EQ(ctx.pp().world_ranks(), g.pp_group(me));
  EXPECT_EQ(ctx.tp().rank(), ctx.coord().tp);
  EXPECT_EQ(ctx.dp().rank(), ctx.coord().dp);
  EXPECT_EQ(ctx.pp().rank(), ctx.coord().pp);
  EXPECT_EQ(ctx.tp().name(), "tp");
  EXPECT_EQ(ctx.dp().name(), "dp");
  EXPECT_EQ(ctx.pp().name(), "pp");
  const auto emb = g.embedding_group(me);
  ASSERT_EQ(ctx.in_embedding_group(), !emb.empty());
  if (ctx.in_embedding_group()) {
    EXPECT_EQ(ctx.embedding().world_ranks(), emb);
    EXPECT_EQ(ctx.embedding().name(), "embedding");
  } else {
    EXPECT_TRUE(contains(error_of([&] { ctx.embedding(); }), "holds no embedding"));
  }
  // Sum of world ranks over each group equals the sum over the grid's member list.
  auto check_sum = [&](Communicator& c, const std::vector<int>& members) {
    Tensor t = Tensor::empty({1}, DType::i32);
    t.data<int32_t>()[0] = me;
    c.all_reduce(t);
    int want = 0;
    for (int m : members) want += m;
    EXPECT_EQ(t.data<int32_t>()[0], want) << c.describe();
  };
  check_sum(ctx.world(), [&] {
    std::vector<int> all(g.world_size());
    for (int r = 0; r < g.world_size(); ++r) all[r] = r;
    return all;
  }());
  check_sum(ctx.tp(), g.tp_group(me));
  check_sum(ctx.dp(), g.dp_group(me));
  check_sum(ctx.pp(), g.pp_group(me));
  if (ctx.in_embedding_group()) check_sum(ctx.embedding(), emb);
  ctx.set_timeout(30.0);
  EXPECT_EQ(ctx.dp().timeout_s(), 30.0);
}

TEST(Context, GroupsMatchTheGrid) {
  const int n = world_size();
  check_context({.tp = 1, .pp = 1, .dp = 0});
  check_context({.tp = n, .pp = 1, .dp = 1});
  if (n % 2 == 0) {
    check_context({.tp = 2, .pp = 1, .dp = 0});
    check_context({.tp = 1, .pp = 2, .dp = 0});
  }
  if (n % 4 == 0) check_context({.tp = 2, .pp = 2, .dp = 0});  // (2,2,2) at 8 ranks
  if (n % 4 == 0) check_context({.tp = 1, .pp = n / 2 >= 3 ? 4 : 2, .dp = 0});
}

TEST(Context, NcclWithoutCudaSaysSo) {
#ifndef TESSERA_WITH_CUDA
  EXPECT_TRUE(contains(error_of([] { make_nccl_context({}, 0); }), "no CUDA backend"));
#else
  GTEST_SKIP() << "CUDA build: tests/parallel/test_comm_nccl.cpp covers NCCL";
#endif
}

}  // namespace
}  // namespace tessera::parallel
