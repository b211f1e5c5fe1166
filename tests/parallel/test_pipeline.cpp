// Pipeline schedules and the split of layers into stages (pure functions, no MPI).
#include "parallel/pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"

namespace tessera::parallel {
namespace {

// Every micro-batch's forward once, then its backward once; backwards in micro-batch order; and
// never more micro-batches in flight (forwarded, not yet backwarded) than the schedule's slots.
void expect_valid(PipelineSchedule schedule, int stage, int stages, int m) {
  SCOPED_TRACE("stage " + std::to_string(stage) + " of " + std::to_string(stages) + ", " +
               std::to_string(m) + " micro-batches");
  const std::vector<PipelineStep> order = pipeline_order(schedule, stage, stages, m);
  ASSERT_EQ(order.size(), static_cast<size_t>(2 * m));
  std::vector<int> forwarded(m, 0), backwarded(m, 0);
  int in_flight = 0, max_in_flight = 0, next_backward = 0;
  for (const PipelineStep& s : order) {
    if (s.forward) {
      ++forwarded[s.micro_batch];
      max_in_flight = std::max(max_in_flight, ++in_flight);
    } else {
      EXPECT_EQ(forwarded[s.micro_batch], 1) << "backward before forward of " << s.micro_batch;
      EXPECT_EQ(s.micro_batch, next_backward++);
      ++backwarded[s.micro_batch];
      --in_flight;
    }
  }
  for (int i = 0; i < m; ++i) EXPECT_TRUE(forwarded[i] == 1 && backwarded[i] == 1) << i;
  EXPECT_LE(max_in_flight, pipeline_slots(schedule, stage, stages, m));
}

TEST(Pipeline, SchedulesAreValidEverywhere) {
  for (PipelineSchedule s : {PipelineSchedule::gpipe, PipelineSchedule::one_f_one_b})
    for (int stages : {1, 2, 3, 4})
      for (int stage = 0; stage < stages; ++stage)
        for (int m : {1, 2, 3, 4, 7}) expect_valid(s, stage, stages, m);
}

TEST(Pipeline, OneFOneBWarmsUpThenAlternates) {
  using S = PipelineStep;
  // Stage 0 of 3, 4 micro-batches: 2 warm-up forwards, then F B pairs, then the last backwards.
  EXPECT_EQ(pipeline_order(PipelineSchedule::one_f_one_b, 0, 3, 4), (std::vector<S>{{true, 0},
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
  EXPECT_EQ(pipeline_slots(PipelineSchedule::one_f_one_b, 0, 3, 8), 3);
  EXPECT_EQ(pipeline_slots(PipelineSchedule::gpipe, 0, 3, 8), 8);
  EXPECT_EQ(parse_pipeline_schedule("1f1b"), PipelineSchedule::one_f_one_b);
  EXPECT_THROW(parse_pipeline_schedule("zb"), Error);
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
