#include "core/tensor.h"

#include <gtest/gtest.h>

#include <functional>

namespace tessera {
namespace {

// The Error message thrown by f, or "" when it does not throw.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A (rows, cols) f32 tensor holding 0, 1, 2, ...
Tensor iota(int64_t rows, int64_t cols) {
  Tensor t = Tensor::empty({rows, cols}, DType::f32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}

TEST(Tensor, EmptyAndZeros) {
  const Tensor u;
  EXPECT_FALSE(u.defined());
  const Tensor e = Tensor::empty({2, 3, 4}, DType::bf16);
  EXPECT_TRUE(e.defined());
  EXPECT_TRUE(e.is_cpu());
  EXPECT_EQ(e.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(e.dim(), 3);
  EXPECT_EQ(e.numel(), 24);
  EXPECT_EQ(e.nbytes(), 48u);
  EXPECT_EQ(e.size(-1), 4);
  EXPECT_EQ(e.size(0), 2);
  EXPECT_TRUE(has(error_of([&] { e.size(3); }), "dimension 3 out of range for shape (2, 3, 4)"));
  const Tensor z = Tensor::zeros({5}, DType::i32);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(z.data<int32_t>()[i], 0);
  EXPECT_EQ(Tensor::zeros({}, DType::f32).numel(), 1);
  EXPECT_EQ(Tensor::zeros({0, 7}, DType::f32).numel(), 0);
  EXPECT_TRUE(has(error_of([] { Tensor::empty({2, -1}, DType::f32); }), "negative extent"));
  EXPECT_EQ(shape_str({2, 3}), "(2, 3)");
  EXPECT_EQ(shape_str({5}), "(5,)");
  EXPECT_EQ(shape_str({}), "()");
}

TEST(Tensor, ViewNarrowCarveShareStorage) {
  Tensor t = iota(4, 3);
  const Tensor v = t.view({3, 4});
  EXPECT_EQ(v.storage(), t.storage());
  EXPECT_EQ(v.raw(), t.raw());
  const Tensor rows = t.narrow(1, 2);  // rows 1 and 2
  EXPECT_EQ(rows.shape(), (Shape{2, 3}));
  EXPECT_EQ(rows.storage(), t.storage());
  EXPECT_EQ(rows.data<float>()[0], 3.0f);
  EXPECT_EQ(rows.byte_offset(), 12u);
  const Tensor c = rows.carve(2, {2, 2});  // elements 5..8 of t
  EXPECT_EQ(c.data<float>()[0], 5.0f);
  EXPECT_EQ(c.data<float>()[3], 8.0f);
  c.data<float>()[1] = -1.0f;  // writes through to t
  EXPECT_EQ(t.data<float>()[6], -1.0f);
  EXPECT_EQ(t.narrow(4, 0).numel(), 0);
}

TEST(Tensor, ViewNarrowCarveCheckBounds) {
  const Tensor t = iota(4, 3);
  EXPECT_TRUE(has(error_of([&] { t.view({5, 3}); }), "view (5, 3) of (4, 3)"));
  EXPECT_TRUE(has(error_of([&] { t.narrow(3, 2); }), "narrow(3, 2) of shape (4, 3)"));
  EXPECT_THROW(t.narrow(-1, 1), Error);
  EXPECT_THROW(t.narrow(0, -1), Error);
  EXPECT_THROW(Tensor::zeros({}, DType::f32).narrow(0, 1), Error);
  EXPECT_TRUE(has(error_of([&] { t.carve(10, {3}); }), "carve (3,) at 10 from 12 elements"));
  EXPECT_THROW(t.carve(-1, {1}), Error);
  EXPECT_THROW(t.narrow(1, 2).carve(5, {2}), Error);  // bounds are the view's, not the storage's
  EXPECT_NO_THROW(t.carve(12, {0}));
}

TEST(Tensor, ExpectNamesTheTensor) {
  const Tensor t = Tensor::zeros({2, 3}, DType::f32);
  EXPECT_NO_THROW(t.expect("x", {2, 3}, DType::f32));
  EXPECT_TRUE(has(error_of([&] {
                    t.expect("x", {3, 2}, DType::f32);
                  }),
                  "x has shape (2, 3), expected (3, 2)"));
  EXPECT_TRUE(has(error_of([&] {
                    t.expect("x", {2, 3}, DType::bf16);
                  }),
                  "x has dtype f32, expected bf16"));
  EXPECT_TRUE(has(error_of([] { Tensor().expect("w", {1}, DType::f32); }),
                  "w is undefined, expected (1,)"));
}

TEST(Tensor, CopyFromAndZero) {
  Tensor src = iota(2, 3);
  Tensor dst = Tensor::zeros({6}, DType::f32);
  dst.copy_from(src);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(dst.data<float>()[i], static_cast<float>(i));
  EXPECT_TRUE(
      has(error_of([&] { dst.copy_from(Tensor::zeros({6}, DType::i32)); }), "copy i32 into f32"));
  EXPECT_TRUE(
      has(error_of([&] { dst.copy_from(Tensor::zeros({5}, DType::f32)); }), "copy (5,) into (6,)"));
  Tensor mid = src.narrow(1, 1);
  mid.zero_();  // only row 1
  EXPECT_EQ(src.data<float>()[2], 2.0f);
  EXPECT_EQ(src.data<float>()[3], 0.0f);
  EXPECT_EQ(src.data<float>()[5], 0.0f);
  const Tensor copy = src.to(Device::cpu());
  EXPECT_NE(copy.storage(), src.storage());
  EXPECT_EQ(copy.data<float>()[2], 2.0f);
}

TEST(Tensor, DataChecksTheDtype) {
  const Tensor t = Tensor::zeros({2}, DType::bf16);
  EXPECT_NO_THROW(t.data<bf16>());
  EXPECT_TRUE(has(error_of([&] { t.data<float>(); }), "tensor holds bf16, asked for f32"));
  EXPECT_TRUE(has(error_of([] { Tensor().data<float>(); }), "data<f32>() of an undefined tensor"));
}

}  // namespace
}  // namespace tessera
