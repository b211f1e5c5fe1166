// Pipeline schedules and the split of layers into stages (pure functions, no MPI). Besides each
// rank's order on its own, a simulation runs every rank's order together the way PipelineRunner
// does (receives block, sends are waited for before their slot is reused) to show that no schedule
// deadlocks, that each receive gets the message it expects, and how long the bubble is.
#include "parallel/pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "core/error.h"

namespace tessera::parallel {
namespace {

struct Layout {
  PipelineSchedule schedule;
  int stages, micro_batches, chunks;
  std::string str() const {
    return std::string(schedule == PipelineSchedule::gpipe ? "gpipe" : "1f1b") +
           " P=" + std::to_string(stages) + " M=" + std::to_string(micro_batches) +
           " v=" + std::to_string(chunks);
  }
};

std::vector<Layout> layouts() {
  std::vector<Layout> all;
  for (PipelineSchedule s : {PipelineSchedule::gpipe, PipelineSchedule::one_f_one_b})
    for (int p : {1, 2, 3, 4})
      for (int m : {1, 2, 3, 4, 7}) all.push_back({s, p, m, 1});
  for (int p : {2, 3, 4})
    for (int v : {2, 3})
      for (int groups : {1, 2, 3}) all.push_back({PipelineSchedule::one_f_one_b, p, groups * p, v});
  return all;
}

// Every (chunk, micro-batch) forward once, then its backward once; each chunk's backwards in
// micro-batch order; a chunk's micro-batches in flight always consecutive, so that slot m % slots
// is free when micro-batch m needs it.
void expect_valid(const Layout& l, int stage) {
  SCOPED_TRACE(l.str() + " stage " + std::to_string(stage));
  const std::vector<PipelineStep> order =
      pipeline_order(l.schedule, stage, l.stages, l.micro_batches, l.chunks);
  ASSERT_EQ(order.size(), static_cast<size_t>(2 * l.micro_batches * l.chunks));
  for (int c = 0; c < l.chunks; ++c) {
    std::vector<int> forwarded(l.micro_batches, 0), backwarded(l.micro_batches, 0);
    int next_forward = 0, next_backward = 0;
    for (const PipelineStep& s : order) {
      if (s.chunk != c) continue;
      if (s.forward) {
        EXPECT_EQ(s.micro_batch, next_forward++);
        ++forwarded[s.micro_batch];
      } else {
        EXPECT_EQ(forwarded[s.micro_batch], 1) << "backward before forward of " << s.micro_batch;
        EXPECT_EQ(s.micro_batch, next_backward++);
        ++backwarded[s.micro_batch];
      }
    }
    for (int i = 0; i < l.micro_batches; ++i)
      EXPECT_TRUE(forwarded[i] == 1 && backwarded[i] == 1) << "chunk " << c << " micro " << i;
    EXPECT_GE(pipeline_slots(order, c), 1);
  }
}

TEST(Pipeline, SchedulesAreValidEverywhere) {
  for (const Layout& l : layouts())
    for (int stage = 0; stage < l.stages; ++stage) expect_valid(l, stage);
}

// One message in flight: (from virtual stage, micro-batch, activation or gradient).
using Message = std::tuple<int, int, bool>;

struct Simulation {
  bool finished = false;
  double makespan = 0;  // forward 1/v, backward 2/v time units per chunk
  // Messages per (sender rank, receiver rank) in the order they were sent and in the order
  // receives were posted for them.
  std::map<std::pair<int, int>, std::vector<Message>> sent, received;
};

// Runs every rank's order as PipelineRunner does: a forward of virtual stage vs waits for vs − 1's
// activation, a backward for vs + 1's gradient, and a forward reusing a slot waits until the
// previous user's messages were received. Ranks advance while any can; a deadlock leaves
// `finished` false.
Simulation simulate(const Layout& l) {
  const int p = l.stages, v = l.chunks, m_count = l.micro_batches, virtual_stages = p * v;
  std::vector<std::vector<PipelineStep>> orders;
  for (int s = 0; s < p; ++s) orders.push_back(pipeline_order(l.schedule, s, p, m_count, v));
  // Finish times of each (virtual stage, micro-batch)'s forward and backward; -1: not yet.
  std::vector<std::vector<double>> fwd(virtual_stages, std::vector<double>(m_count, -1)), bwd = fwd;
  std::vector<size_t> pos(p, 0);
  std::vector<double> clock(p, 0);
  Simulation sim;
  auto record = [&](auto& book, int from_vs, int to_vs, int micro, bool activation) {
    book[{from_vs % p, to_vs % p}].push_back({from_vs, micro, activation});
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (int s = 0; s < p; ++s) {
      while (pos[s] < orders[s].size()) {
        const PipelineStep& st = orders[s][pos[s]];
        const int vs = st.chunk * p + s, micro = st.micro_batch;
        double ready = clock[s];
        auto need = [&](double t) {
          if (t < 0) return false;
          ready = std::max(ready, t);
          return true;
        };
        if (st.forward) {
          if (vs > 0 && !need(fwd[vs - 1][micro])) break;
          const int slots = pipeline_slots(orders[s], st.chunk), old = micro - slots;
          if (old >= 0 && ((vs + 1 < virtual_stages && fwd[vs + 1][old] < 0) ||
                           (vs > 0 && bwd[vs - 1][old] < 0)))
            break;
          if (vs > 0) record(sim.received, vs - 1, vs, micro, true);
          if (vs + 1 < virtual_stages) record(sim.sent, vs, vs + 1, micro, true);
          fwd[vs][micro] = clock[s] = ready + 1.0 / v;
        } else {
          if (vs + 1 < virtual_stages && !need(bwd[vs + 1][micro])) break;
          if (vs + 1 < virtual_stages) record(sim.received, vs + 1, vs, micro, false);
          if (vs > 0) record(sim.sent, vs, vs - 1, micro, false);
          bwd[vs][micro] = clock[s] = ready + 2.0 / v;
        }
        ++pos[s];
        progress = true;
      }
    }
  }
  sim.finished = true;
  for (int s = 0; s < p; ++s) sim.finished = sim.finished && pos[s] == orders[s].size();
  sim.makespan = *std::max_element(clock.begin(), clock.end());
  return sim;
}

TEST(Pipeline, NoScheduleDeadlocksAndReceivesMatchSends) {
  for (const Layout& l : layouts()) {
    SCOPED_TRACE(l.str());
    const Simulation sim = simulate(l);
    ASSERT_TRUE(sim.finished) << "deadlock";
    // MPI (one tag) and NCCL (no tags) match a pair's messages in order: both sides must agree on
    // it, activations and gradients together (at P = 2 both flow each way between the two ranks).
    EXPECT_EQ(sim.sent, sim.received);
  }
}

TEST(Pipeline, InterleavingShrinksTheBubble) {
  // With a forward taking 1 and a backward 2 time units per stage's worth of layers, 1F1B takes
  // 3·(M + P − 1) and interleaving over v chunks 3·M + 3·(P − 1)/v (Narayanan et al. 2021, 2.2).
  for (int p : {2, 4})
    for (int m : {p, 2 * p, 4 * p}) {
      SCOPED_TRACE("P=" + std::to_string(p) + " M=" + std::to_string(m));
      EXPECT_DOUBLE_EQ(simulate({PipelineSchedule::one_f_one_b, p, m, 1}).makespan,
                       3.0 * (m + p - 1));
      EXPECT_DOUBLE_EQ(simulate({PipelineSchedule::gpipe, p, m, 1}).makespan, 3.0 * (m + p - 1));
      for (int v : {2, 4}) {
        const double interleaved = simulate({PipelineSchedule::one_f_one_b, p, m, v}).makespan;
        EXPECT_DOUBLE_EQ(interleaved, 3.0 * m + 3.0 * (p - 1) / v) << "v=" << v;
        EXPECT_LT(interleaved, 3.0 * (m + p - 1)) << "v=" << v;
      }
    }
}

TEST(Pipeline, InterleavedActivationsAreMegatrons) {
  // Rank 0 holds at most P·v + P − 1 chunks' activations at once (Narayanan et al. 2021: the
  // first stage's (1 + (P − 1)/(P·v))·P stages' worth), once M ≥ 2P lets the steady state start.
  for (int p : {2, 4, 8})
    for (int v : {1, 2, 4})
      for (int m : {2 * p, 4 * p}) {
        const std::vector<PipelineStep> order =
            pipeline_order(PipelineSchedule::one_f_one_b, 0, p, m, v);
        int in_flight = 0, peak = 0;
        for (const PipelineStep& s : order) peak = std::max(peak, in_flight += s.forward ? 1 : -1);
        EXPECT_EQ(peak, v == 1 ? p : p * v + p - 1) << "P=" << p << " v=" << v << " M=" << m;
      }
}

TEST(Pipeline, OneFOneBWarmsUpThenAlternates) {
  using S = PipelineStep;
  // Stage 0 of 3, 4 micro-batches: 2 warm-up forwards, then F B pairs, then the last backwards.
  const std::vector<S> order = pipeline_order(PipelineSchedule::one_f_one_b, 0, 3, 4);
  EXPECT_EQ(order, (std::vector<S>{{true, 0},
                                   {true, 1},
                                   {true, 2},
                                   {false, 0},
                                   {true, 3},
                                   {false, 1},
                                   {false, 2},
                                   {false, 3}}));
  // The last stage alternates from the start.
  EXPECT_EQ(pipeline_order(PipelineSchedule::one_f_one_b, 2, 3, 2),
            (std::vector<S>{{true, 0}, {false, 0}, {true, 1}, {false, 1}}));
  EXPECT_EQ(pipeline_slots(order), 3);
  EXPECT_EQ(pipeline_slots(pipeline_order(PipelineSchedule::one_f_one_b, 0, 3, 8)), 3);
  EXPECT_EQ(pipeline_slots(pipeline_order(PipelineSchedule::gpipe, 0, 3, 8)), 8);
  EXPECT_EQ(parse_pipeline_schedule("1f1b"), PipelineSchedule::one_f_one_b);
  EXPECT_THROW(parse_pipeline_schedule("zb"), Error);
}

TEST(Pipeline, InterleavedOrderIsMegatrons) {
  using S = PipelineStep;
  // P = 2, v = 2, M = 4: micro-batches go through the chunks in groups of P = 2. Rank 0 warms up
  // with (P − 1)·2 + (v − 1)·P = 4 forwards, rank 1 with 2; backwards take the last chunk first.
  EXPECT_EQ(pipeline_order(PipelineSchedule::one_f_one_b, 0, 2, 4, 2),
            (std::vector<S>{{true, 0, 0},
                            {true, 1, 0},
                            {true, 0, 1},
                            {true, 1, 1},
                            {true, 2, 0},
                            {false, 0, 1},
                            {true, 3, 0},
                            {false, 1, 1},
                            {true, 2, 1},
                            {false, 0, 0},
                            {true, 3, 1},
                            {false, 1, 0},
                            {false, 2, 1},
                            {false, 3, 1},
                            {false, 2, 0},
                            {false, 3, 0}}));
  EXPECT_EQ(pipeline_order(PipelineSchedule::one_f_one_b, 1, 2, 4, 2),
            (std::vector<S>{{true, 0, 0},
                            {true, 1, 0},
                            {true, 0, 1},
                            {false, 0, 1},
                            {true, 1, 1},
                            {false, 1, 1},
                            {true, 2, 0},
                            {false, 0, 0},
                            {true, 3, 0},
                            {false, 1, 0},
                            {true, 2, 1},
                            {false, 2, 1},
                            {true, 3, 1},
                            {false, 3, 1},
                            {false, 2, 0},
                            {false, 3, 0}}));
  // M = P: all forwards first.
  const std::vector<S> all_warm = pipeline_order(PipelineSchedule::one_f_one_b, 1, 2, 2, 2);
  EXPECT_TRUE(
      std::all_of(all_warm.begin(), all_warm.begin() + 4, [](const S& s) { return s.forward; }));
  // What interleaving cannot run.
  EXPECT_THROW(pipeline_order(PipelineSchedule::gpipe, 0, 2, 4, 2), Error);
  EXPECT_THROW(pipeline_order(PipelineSchedule::one_f_one_b, 0, 2, 3, 2), Error);  // M % P
  EXPECT_THROW(pipeline_order(PipelineSchedule::one_f_one_b, 0, 1, 4, 2), Error);  // one stage
}

TEST(Pipeline, StageLayers) {
  // Even split, remainder on the first stages.
  EXPECT_EQ(stage_layers(10, 0, 4).first, 0);
  EXPECT_EQ(stage_layers(10, 0, 4).end, 3);
  EXPECT_EQ(stage_layers(10, 1, 4).end, 6);
  EXPECT_EQ(stage_layers(10, 3, 4).first, 8);
  EXPECT_EQ(stage_layers(10, 3, 4).end, 10);
  // Listed.
  EXPECT_EQ(stage_layers(6, 1, 2, {1, 5}).first, 1);
  EXPECT_EQ(stage_layers(6, 1, 2, {1, 5}).end, 6);
  EXPECT_THROW(stage_layers(6, 0, 2, {2, 2}), Error);  // sums to 4
  EXPECT_THROW(stage_layers(6, 0, 2, {6, 0}), Error);  // an empty stage
  EXPECT_THROW(stage_layers(2, 0, 3), Error);          // fewer layers than stages
}

}  // namespace
}  // namespace tessera::parallel
