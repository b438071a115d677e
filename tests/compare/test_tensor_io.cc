/// Tests of compare/tensor_io.h: round trips, NumPy / safetensors fixtures byte for byte, malformed input.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "compare/tensor_io.h"

namespace indexlab::compare {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes fixture(const std::string& name) {
  std::ifstream f(std::string(INDEXLAB_TEST_DATA_DIR) + "/" + name, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing fixture " << name << " (run tests/data/make_fixtures.py)";
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

Bytes bytes_of(const std::string& s) { return Bytes(s.begin(), s.end()); }

// Asserts an error whose message contains every one of `parts`.
void expect_error(const Status& s, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(s.ok()) << "expected an error containing '" << *parts.begin() << "'";
  for (const std::string& p : parts)
    EXPECT_NE(s.message().find(p), std::string::npos) << s.message() << "\n  lacks: " << p;
}

template <typename T>
Tensor raw(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  Bytes b(values.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), values.data(), b.size());
  Tensor t;
  EXPECT_TRUE(Tensor::from_raw(dtype, std::move(shape), std::move(b), &t).ok());
  return t;
}

// One tensor per dtype, values at the edges of each range, plus a scalar and an empty tensor.
TensorMap all_dtypes() {
  TensorMap m;
  const float inf = std::numeric_limits<float>::infinity();
  m["f32"] = raw<float>(DType::F32, {2, 3}, {1.5f, -0.0f, inf, -3.25e-5f, 1e30f, std::nanf("")});
  m["f64"] = raw<double>(DType::F64, {3}, {0.1, -1e300, 5e-324});
  m["f16"] = raw<uint16_t>(DType::F16, {2, 2}, {0x3C00, 0x8001, 0x7BFF, 0x7E00});
  m["bf16"] = raw<uint16_t>(DType::BF16, {3}, {0x3FC0, 0xC010, 0x0001});
  std::vector<uint8_t> codes(256);
  for (int i = 0; i < 256; ++i) codes[i] = static_cast<uint8_t>(i);
  m["e4m3"] = raw<uint8_t>(DType::F8_E4M3, {16, 16}, codes);
  m["i8"] = raw<int8_t>(DType::I8, {4}, {-128, 127, 0, -1});
  m["i16"] = raw<int16_t>(DType::I16, {3}, {-32768, 32767, 12345});
  m["i32"] = raw<int32_t>(DType::I32, {3, 1}, {INT32_MIN, INT32_MAX, 0});
  m["i64"] = raw<int64_t>(DType::I64, {3}, {INT64_MIN, INT64_MAX, -(int64_t{1} << 40)});
  m["u8"] = raw<uint8_t>(DType::U8, {3}, {0, 255, 128});
  m["u16"] = raw<uint16_t>(DType::U16, {3}, {65535, 1, 0});
  m["u32"] = raw<uint32_t>(DType::U32, {2}, {0xFFFFFFFFu, 7});
  m["u64"] = raw<uint64_t>(DType::U64, {2}, {UINT64_MAX, uint64_t{1} << 63});
  m["bool"] = raw<uint8_t>(DType::BOOL, {1, 3}, {1, 0, 1});
  m["scalar"] = raw<float>(DType::F32, {}, {-2.5f});
  m["empty"] = raw<int32_t>(DType::I32, {0, 5}, {});
  return m;
}

void expect_same(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    const Tensor& u = b.at(name);
    EXPECT_EQ(t.dtype, u.dtype) << name;
    EXPECT_EQ(t.shape, u.shape) << name;
    EXPECT_EQ(t.data, u.data) << name;
  }
}

// ---- dtypes, shapes, conversions -------------------------------------------------------------

TEST(TensorIo, DtypeNamesAndSizes) {
  for (int i = 0; i <= static_cast<int>(DType::BOOL); ++i) {
    DType d;
    ASSERT_TRUE(dtype_from_name(dtype_name(static_cast<DType>(i)), &d));
    EXPECT_EQ(static_cast<int>(d), i);
  }
  DType d;
  EXPECT_FALSE(dtype_from_name("F8_E5M2", &d));
  EXPECT_EQ(dtype_size(DType::F8_E4M3), 1);
  EXPECT_EQ(dtype_size(DType::BF16), 2);
  EXPECT_EQ(dtype_size(DType::U64), 8);
  EXPECT_EQ(format_shape({4, 64, 128}), "(4, 64, 128)");
  EXPECT_EQ(format_shape({7}), "(7)");
  EXPECT_EQ(format_shape({}), "()");
}

TEST(TensorIo, CheckedNumel) {
  int64_t n = -1;
  ASSERT_TRUE(checked_numel({}, &n).ok());
  EXPECT_EQ(n, 1);
  ASSERT_TRUE(checked_numel({INT64_MAX, INT64_MAX, 0}, &n).ok());  // a zero dim wins
  EXPECT_EQ(n, 0);
  expect_error(checked_numel({3, -1}, &n), {"(3, -1)", "negative dim 1"});
  expect_error(checked_numel({int64_t{1} << 32, int64_t{1} << 32}, &n), {"more than 2^63"});
  Tensor t;
  t.shape = {int64_t{1} << 62, 4};
  EXPECT_EQ(t.numel(), -1);
  t.dtype = DType::F64;
  t.shape = {int64_t{1} << 61};
  EXPECT_EQ(t.nbytes(), -1);
  expect_error(t.check(), {"overflows int64 bytes"});
}

TEST(TensorIo, FloatDecodingIsExact) {
  std::vector<float> v;
  ASSERT_TRUE(raw<uint16_t>(DType::F16, {7}, {0x3C00, 0x7BFF, 0x0001, 0x0400, 0x8000, 0xFC00, 0x7E00})
                  .to_f32(&v)
                  .ok());
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], 65504.0f);
  EXPECT_EQ(v[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(v[3], std::ldexp(1.0f, -14));
  EXPECT_TRUE(v[4] == 0.0f && std::signbit(v[4]));
  EXPECT_EQ(v[5], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(v[6]));
  ASSERT_TRUE(raw<uint16_t>(DType::BF16, {3}, {0x3FC0, 0xC010, 0x0001}).to_f32(&v).ok());
  EXPECT_EQ(v, (std::vector<float>{1.5f, -2.25f, std::ldexp(1.0f, -133)}));
  ASSERT_TRUE(raw<uint8_t>(DType::F8_E4M3, {7}, {0x7E, 0xFE, 0x01, 0x08, 0x38, 0x7F, 0xFF}).to_f32(&v).ok());
  EXPECT_EQ(v[0], 448.0f);
  EXPECT_EQ(v[1], -448.0f);
  EXPECT_EQ(v[2], std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(v[3], std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(v[4], 1.0f);
  EXPECT_TRUE(std::isnan(v[5]) && std::isnan(v[6]));
}

TEST(TensorIo, ConversionsAreLosslessOrFail) {
  std::vector<float> f;
  ASSERT_TRUE(raw<double>(DType::F64, {3}, {0.5, 3.0, std::nan("")}).to_f32(&f).ok());
  EXPECT_EQ(f[1], 3.0f);
  expect_error(raw<double>(DType::F64, {2, 2}, {0.5, 1.0, 2.0, 0.1}).to_f32(&f),
               {"F64 element (1, 1) = 0.10000000000000001", "not exactly representable as F32"});
  expect_error(raw<double>(DType::F64, {1}, {1e300}).to_f32(&f), {"not exactly representable"});
  ASSERT_TRUE(raw<int64_t>(DType::I64, {2}, {int64_t{1} << 40, -(1 << 24)}).to_f32(&f).ok());
  EXPECT_EQ(f[0], std::ldexp(1.0f, 40));
  expect_error(raw<int32_t>(DType::I32, {2}, {3, (1 << 24) + 1}).to_f32(&f), {"I32 element (1) = 16777217"});
  expect_error(raw<uint64_t>(DType::U64, {1}, {UINT64_MAX}).to_f32(&f), {"18446744073709551615"});
  ASSERT_TRUE(raw<uint8_t>(DType::BOOL, {2}, {1, 0}).to_f32(&f).ok());
  EXPECT_EQ(f, (std::vector<float>{1.0f, 0.0f}));

  std::vector<int32_t> i32;
  ASSERT_TRUE(raw<int64_t>(DType::I64, {2}, {INT32_MIN, INT32_MAX}).to_i32(&i32).ok());
  EXPECT_EQ(i32, (std::vector<int32_t>{INT32_MIN, INT32_MAX}));
  expect_error(raw<int64_t>(DType::I64, {2}, {0, int64_t{INT32_MAX} + 1}).to_i32(&i32),
               {"I64 element (1) = 2147483648", "outside the I32 range"});
  expect_error(raw<uint32_t>(DType::U32, {1}, {0x80000000u}).to_i32(&i32), {"outside the I32 range"});
  expect_error(raw<float>(DType::F32, {1}, {1.0f}).to_i32(&i32), {"dtype F32 does not convert to I32"});
  ASSERT_TRUE(raw<uint16_t>(DType::U16, {1}, {65535}).to_i32(&i32).ok());
  EXPECT_EQ(i32[0], 65535);

  std::vector<int64_t> i64;
  ASSERT_TRUE(raw<int8_t>(DType::I8, {2}, {-128, 5}).to_i64(&i64).ok());
  EXPECT_EQ(i64, (std::vector<int64_t>{-128, 5}));
  ASSERT_TRUE(raw<uint64_t>(DType::U64, {1}, {uint64_t{INT64_MAX}}).to_i64(&i64).ok());
  expect_error(raw<uint64_t>(DType::U64, {1}, {uint64_t{1} << 63}).to_i64(&i64),
               {"9223372036854775808", "I64 range"});
  expect_error(raw<uint16_t>(DType::BF16, {1}, {0}).to_i64(&i64), {"BF16"});
}

TEST(TensorIo, Factories) {
  Tensor t;
  ASSERT_TRUE(Tensor::from_f32({2, 2}, {1, 2, 3, 4}, &t).ok());
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(t.nbytes(), 16);
  ASSERT_TRUE(Tensor::from_i32({3}, {1, -2, 3}, &t).ok());
  std::vector<int64_t> v;
  ASSERT_TRUE(t.to_i64(&v).ok());
  EXPECT_EQ(v, (std::vector<int64_t>{1, -2, 3}));
  ASSERT_TRUE(Tensor::from_i64({1}, {-5}, &t).ok());
  EXPECT_EQ(t.dtype, DType::I64);
  ASSERT_TRUE(Tensor::from_u8({2}, {0x7E, 0x80}, &t, DType::F8_E4M3).ok());
  EXPECT_EQ(t.dtype, DType::F8_E4M3);
  expect_error(Tensor::from_f32({2, 3}, {1, 2}, &t), {"shape (2, 3) needs 6 values but 2 were given"});
  expect_error(Tensor::from_u8({2}, {1, 2}, &t, DType::BOOL), {"BOOL element (1) has byte 2"});
  expect_error(Tensor::from_u8({1}, {1}, &t, DType::F32), {"one-byte dtype"});
  expect_error(Tensor::from_raw(DType::I16, {3}, {1, 2, 3}, &t), {"needs 6 bytes but the tensor holds 3"});
}

// ---- round trips ---------------------------------------------------------------------------------

TEST(TensorIo, RoundTripNpzAndSafetensorsEveryDtype) {
  const TensorMap m = all_dtypes();
  for (FileFormat f : {FileFormat::Npz, FileFormat::Safetensors}) {
    Bytes b;
    ASSERT_TRUE(write_tensors_to_buffer(f, m, &b).ok());
    TensorMap back;
    const Status s = read_tensors_from_buffer(f, b.data(), b.size(), "rt", &back);
    ASSERT_TRUE(s.ok()) << s.message();
    expect_same(m, back);
  }
}

TEST(TensorIo, RoundTripNpyEveryDtype) {
  for (const auto& [name, t] : all_dtypes()) {
    Bytes b;
    ASSERT_TRUE(write_npy(t, &b).ok()) << name;
    EXPECT_EQ((b.size() - t.data.size()) % 64, 0u) << name;  // data 64-byte aligned, as numpy does
    TensorMap back;
    const Status s =
        read_tensors_from_buffer(FileFormat::Npy, b.data(), b.size(), "dir/" + name + ".npy", &back);
    ASSERT_TRUE(s.ok()) << s.message();
    expect_same({{name, t}}, back);
  }
}

TEST(TensorIo, RoundTripFilesByExtension) {
  const std::string dir = ::testing::TempDir();
  const TensorMap m = all_dtypes();
  const Metadata meta = {{"k", "v"}, {"producer", "test"}};
  for (const std::string ext : {".npz", ".safetensors", ".SafeTensors"}) {
    const std::string path = dir + "/indexlab_rt" + ext;
    const Metadata w = ext == ".npz" ? Metadata{} : meta;
    ASSERT_TRUE(write_tensors(path, m, w).ok()) << path;
    TensorMap back;
    Metadata meta_back = {{"stale", "x"}};
    const Status s = read_tensors(path, &back, &meta_back);
    ASSERT_TRUE(s.ok()) << s.message();
    expect_same(m, back);
    EXPECT_EQ(meta_back, w);
    std::remove(path.c_str());
  }
  const std::string npy = dir + "/indexlab_q.npy";
  ASSERT_TRUE(write_tensors(npy, {{"anything", m.at("e4m3")}}).ok());
  TensorMap back;
  ASSERT_TRUE(read_tensors(npy, &back).ok());
  expect_same({{"indexlab_q", m.at("e4m3")}}, back);
  std::remove(npy.c_str());
}

TEST(TensorIo, DispatchErrors) {
  const TensorMap m = all_dtypes();
  TensorMap out;
  expect_error(read_tensors("/nonexistent/in.npz", &out), {"/nonexistent/in.npz", "cannot open"});
  expect_error(read_tensors("in.h5", &out), {"in.h5", "unknown extension"});
  expect_error(write_tensors(::testing::TempDir() + "/two.npy", m), {"two.npy", "exactly one tensor"});
  expect_error(write_tensors(::testing::TempDir() + "/m.npz", m, {{"k", "v"}}), {"m.npz", "metadata"});
  expect_error(write_tensors("/nonexistent/out.npz", m), {"/nonexistent/out.npz", "cannot create"});
  Bytes b;
  expect_error(write_tensors_to_buffer(FileFormat::Safetensors, {{"__metadata__", m.at("u8")}}, &b),
               {"__metadata__"});
  expect_error(write_tensors_to_buffer(FileFormat::Npz, {{"", m.at("u8")}}, &b), {"empty tensor name"});
  Tensor bad = m.at("f32");
  bad.data.pop_back();
  expect_error(write_tensors_to_buffer(FileFormat::Npz, {{"w", bad}}, &b), {"tensor 'w'", "needs 24 bytes"});
  expect_error(write_tensors_to_buffer(FileFormat::Safetensors, {{"\xff", m.at("u8")}}, &b), {"UTF-8"});
}

// ---- fixtures written by numpy / safetensors (tests/data/make_fixtures.py) ---------------------

const std::vector<float> kF32 = {-1.875f, -1.125f, -0.375f, 0.375f, 1.125f, 1.875f};  // shape (2, 3)

TEST(TensorIo, NumpyNpyFixturesByteExact) {
  struct Case {
    const char* file;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<float> values;
  };
  const std::vector<Case> cases = {
      {"f32_2x3.npy", DType::F32, {2, 3}, kF32},
      {"bf16_3.npy", DType::BF16, {3}, {1.5f, -2.25f, std::ldexp(1.0f, -130)}},
      {"e4m3_4.npy", DType::F8_E4M3, {4}, {448.0f, -0.0f, std::ldexp(1.0f, -9), -3.5f}},
      {"scalar_f64.npy", DType::F64, {}, {}},
  };
  for (const Case& c : cases) {
    const Bytes file = fixture(c.file);
    TensorMap m;
    const Status s = read_tensors_from_buffer(FileFormat::Npy, file.data(), file.size(), c.file, &m);
    ASSERT_TRUE(s.ok()) << s.message();
    ASSERT_EQ(m.size(), 1u);
    const Tensor& t = m.begin()->second;
    EXPECT_EQ(m.begin()->first, std::string(c.file).substr(0, std::strlen(c.file) - 4));
    EXPECT_EQ(t.dtype, c.dtype) << c.file;
    EXPECT_EQ(t.shape, c.shape) << c.file;
    if (!c.values.empty()) {
      std::vector<float> v;
      ASSERT_TRUE(t.to_f32(&v).ok());
      EXPECT_EQ(v, c.values) << c.file;
    }
    Bytes again;
    ASSERT_TRUE(write_npy(t, &again).ok());
    EXPECT_EQ(again, file) << c.file << " is not reproduced byte for byte";
  }
  const Bytes scalar = fixture("scalar_f64.npy");
  Tensor t;
  ASSERT_TRUE(read_npy(scalar.data(), scalar.size(), "s.npy", &t).ok());
  double d;
  std::memcpy(&d, t.data.data(), 8);
  EXPECT_EQ(d, 0.1);
}

TEST(TensorIo, NumpyNpzFixtureByteExact) {
  const Bytes file = fixture("small.npz");
  TensorMap m;
  const Status s = read_npz(file.data(), file.size(), "small.npz", &m);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(m.size(), 6u);
  std::vector<float> f;
  ASSERT_TRUE(m.at("f32").to_f32(&f).ok());
  EXPECT_EQ(f, kF32);
  ASSERT_TRUE(m.at("f16").to_f32(&f).ok());
  EXPECT_EQ(f, (std::vector<float>{1.0f, -0.5f, 65504.0f, std::ldexp(1.0f, -24)}));
  ASSERT_TRUE(m.at("b").to_f32(&f).ok());
  EXPECT_EQ(f, (std::vector<float>{1, 0, 1, 1}));
  std::vector<int32_t> i32;
  ASSERT_TRUE(m.at("i32").to_i32(&i32).ok());
  EXPECT_EQ(i32, (std::vector<int32_t>{-7, 0, INT32_MAX}));
  std::vector<int64_t> i64;
  ASSERT_TRUE(m.at("i64").to_i64(&i64).ok());
  EXPECT_EQ(i64, (std::vector<int64_t>{-(int64_t{1} << 40), 5}));
  EXPECT_EQ(m.at("i64").shape, (std::vector<int64_t>{1, 2}));
  ASSERT_TRUE(m.at("u8").to_i32(&i32).ok());
  EXPECT_EQ(i32, (std::vector<int32_t>{0, 17, 255}));
  Bytes again;
  ASSERT_TRUE(write_npz(m, &again).ok());
  EXPECT_EQ(again, file) << "write_npz does not reproduce numpy.savez byte for byte";
}

TEST(TensorIo, NumpyCompressedNpzFixture) {
  const Bytes file = fixture("small_compressed.npz");
  TensorMap m;
  const Status s = read_tensors_from_buffer(FileFormat::Npz, file.data(), file.size(), "c.npz", &m);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(m.size(), 3u);
  std::vector<float> f;
  ASSERT_TRUE(m.at("f32").to_f32(&f).ok());
  EXPECT_EQ(f, kF32);
  EXPECT_EQ(m.at("scalar").dtype, DType::F64);
  EXPECT_TRUE(m.at("scalar").shape.empty());
  expect_error(m.at("scalar").to_f32(&f), {"F64 element () = 0.1"});
}

TEST(TensorIo, SafetensorsFixtureByteExact) {
  const Bytes file = fixture("small.safetensors");
  TensorMap m;
  Metadata meta;
  const Status s = read_safetensors(file.data(), file.size(), "small.safetensors", &m, &meta);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(meta, (Metadata{{"producer", "make_fixtures.py"}}));
  ASSERT_EQ(m.size(), 6u);
  std::vector<float> f;
  ASSERT_TRUE(m.at("f32").to_f32(&f).ok());
  EXPECT_EQ(f, kF32);
  ASSERT_TRUE(m.at("bf16").to_f32(&f).ok());
  EXPECT_EQ(f, (std::vector<float>{1.5f, -2.25f, std::ldexp(1.0f, -130)}));
  ASSERT_TRUE(m.at("e4m3").to_f32(&f).ok());
  EXPECT_EQ(f, (std::vector<float>{448.0f, -0.0f, std::ldexp(1.0f, -9), -3.5f}));
  EXPECT_EQ(m.at("b").dtype, DType::BOOL);
  Bytes again;
  ASSERT_TRUE(write_safetensors(m, meta, &again).ok());
  EXPECT_EQ(again, file) << "write_safetensors does not reproduce the Python package byte for byte";
}

TEST(TensorIo, FortranOrderAndBigEndianFixturesRejected) {
  TensorMap m;
  Bytes b = fixture("fortran_3x2.npy");
  expect_error(read_tensors_from_buffer(FileFormat::Npy, b.data(), b.size(), "fortran_3x2.npy", &m),
               {"fortran_3x2.npy: ", "fortran_order is True"});
  b = fixture("big_endian.npy");
  expect_error(read_tensors_from_buffer(FileFormat::Npy, b.data(), b.size(), "big_endian.npy", &m),
               {"big_endian.npy: ", "descr '>f4' is big-endian"});
  EXPECT_TRUE(m.empty());
}

// ---- malformed .npy ----------------------------------------------------------------------------------

// An .npy with the given header dict text and `data_bytes` zero bytes of data.
Bytes npy_with_header(const std::string& dict, size_t data_bytes, int major = 1) {
  Bytes b = bytes_of(std::string("\x93NUMPY", 6));
  b.push_back(static_cast<uint8_t>(major));
  b.push_back(0);
  const std::string header = dict + "\n";
  b.push_back(static_cast<uint8_t>(header.size()));
  b.push_back(static_cast<uint8_t>(header.size() >> 8));
  if (major != 1) b.insert(b.end(), {0, 0});
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes);
  return b;
}

Status read_npy_named(const Bytes& b, const std::string& label = "in.npy") {
  Tensor t;
  return read_npy(b.data(), b.size(), label, &t);
}

TEST(TensorIo, NpyTruncatedAtEveryOffset) {
  for (const char* name : {"f32_2x3.npy", "scalar_f64.npy"}) {
    const Bytes file = fixture(name);
    for (size_t n = 0; n < file.size(); ++n) {
      const Bytes cut(file.begin(), file.begin() + n);
      const Status s = read_npy_named(cut, name);
      ASSERT_FALSE(s.ok()) << name << " truncated to " << n << " bytes was accepted";
      EXPECT_EQ(s.message().rfind(std::string(name) + ": ", 0), 0u) << s.message();
    }
  }
  const Bytes file = fixture("f32_2x3.npy");
  expect_error(read_npy_named(Bytes(file.begin(), file.end() - 4), "in.npy"),
               {"in.npy: header says shape (2, 3) of <f4 = 24 bytes but 20 bytes remain"});
  Bytes longer = file;
  longer.push_back(0);
  expect_error(read_npy_named(longer, "in.npy"), {"in.npy: 1 trailing bytes"});
}

TEST(TensorIo, NpyHeaderErrors) {
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  ASSERT_TRUE(read_npy_named(npy_with_header(ok, 8)).ok());
  ASSERT_TRUE(
      read_npy_named(npy_with_header("{\"shape\":(2,1,),'descr':'<i4','fortran_order':False}", 8)).ok());
  ASSERT_TRUE(read_npy_named(npy_with_header(ok, 8, 2)).ok());
  ASSERT_TRUE(read_npy_named(npy_with_header(ok, 8, 3)).ok());
  struct Case {
    std::string dict;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", "shape (2) is not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", "shape must be a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", "negative dim"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "does not fit int64"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }", "expected ',' or ')' in shape"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (02,), }", "leading zero"},
      {"{'descr': '<f4', 'fortran_order': false, 'shape': (2,), }", "fortran_order must be True or False"},
      {"{'descr': '<f4', 'shape': (2,), }", "no 'fortran_order' key"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "duplicate key 'descr'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", "unexpected key 'x'"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", "structured dtypes"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk", "after the closing '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", "expected ',' or '}'"},
      {"{'descr: '<f4', 'fortran_order': False, 'shape': (2,), }", "expected ':'"},
      {"['descr', '<f4']", "does not start with '{'"},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", "unsupported descr '<c8'"},
      {"{'descr': '<U2', 'fortran_order': False, 'shape': (2,), }", "unsupported descr '<U2'"},
      {"{'descr': 'bfloat16', 'fortran_order': False, 'shape': (2,), }",
       "'bfloat16' is not a valid npy descr"},
      {"{'descr': 'float8_e4m3fn', 'fortran_order': False, 'shape': (2,), }", "'<V1'"},
      {"{'descr': '>i8', 'fortran_order': False, 'shape': (1,), }", "descr '>i8' is big-endian"},
      {"{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", "fortran_order is True"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
       "shape (4611686018427387904, 4) has more than 2^63 elements"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }",
       "overflows int64 bytes"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4, 64, 128), }",
       "header says shape (4, 64, 128) of <f4 = 131072 bytes but 8 bytes remain"},
  };
  for (const Case& c : cases) expect_error(read_npy_named(npy_with_header(c.dict, 8)), {"in.npy: ", c.want});
  // One-byte descrs may use any byte-order character; V1 / V2 are the ml_dtypes fallbacks.
  Tensor t;
  for (const auto& [descr, dtype] : std::vector<std::pair<std::string, DType>>{{"|i1", DType::I8},
                                                                               {"<i1", DType::I8},
                                                                               {">u1", DType::U8},
                                                                               {"|V1", DType::F8_E4M3},
                                                                               {"<V2", DType::BF16},
                                                                               {"|V2", DType::BF16},
                                                                               {"|b1", DType::BOOL}}) {
    const Bytes b = npy_with_header("{'descr': '" + descr + "', 'fortran_order': False, 'shape': (2,), }",
                                    2 * static_cast<size_t>(dtype_size(dtype)));
    ASSERT_TRUE(read_npy(b.data(), b.size(), "in.npy", &t).ok()) << descr;
    EXPECT_EQ(t.dtype, dtype) << descr;
  }
  Bytes b = npy_with_header("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", 2);
  b.back() = 2;
  expect_error(read_npy_named(b), {"in.npy: BOOL element (1) has byte 2"});
  b = npy_with_header(ok, 8);
  b[0] = 'X';
  expect_error(read_npy_named(b), {"in.npy: bad magic"});
  b = npy_with_header(ok, 8);
  b[6] = 4;
  expect_error(read_npy_named(b), {"in.npy: unsupported .npy format version 4.0"});
  b = npy_with_header(ok, 8);
  b[8] = 0xFF;
  b[9] = 0xFF;
  expect_error(read_npy_named(b), {"in.npy: header length 65535 exceeds the"});
}

TEST(TensorIo, RankLimitIs64) {
  Tensor t;
  ASSERT_TRUE(Tensor::from_f32(std::vector<int64_t>(64, 1), {3.5f}, &t).ok());
  Bytes b;
  ASSERT_TRUE(write_npy(t, &b).ok());
  Tensor back;
  ASSERT_TRUE(read_npy(b.data(), b.size(), "r.npy", &back).ok());
  EXPECT_EQ(back.shape, t.shape);
  std::string dims;
  for (int i = 0; i < 65; ++i) dims += "1, ";
  expect_error(read_npy_named(
                   npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }", 4)),
               {"in.npy: ", "more than 64 dims"});
  t.shape.push_back(1);
  expect_error(write_npy(t, &b), {"rank 65 exceeds the maximum of 64"});
  expect_error(write_safetensors({{"w", t}}, {}, &b), {"tensor 'w': rank 65"});
}

// ---- malformed .npz --------------------------------------------------------------------------------

Status read_npz_named(const Bytes& b, const std::string& label = "in.npz") {
  TensorMap m;
  return read_npz(b.data(), b.size(), label, &m);
}

// Offset of central directory entry `k` in a zip without zip64 end records.
size_t central_entry(const Bytes& zip, int k) {
  size_t p = zip[zip.size() - 6] | (zip[zip.size() - 5] << 8) | (zip[zip.size() - 4] << 16);
  for (int i = 0; i < k; ++i)
    p += 46 + (zip[p + 28] | (zip[p + 29] << 8)) + (zip[p + 30] | (zip[p + 31] << 8));
  return p;
}

void put32(Bytes* b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*b)[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t get32(const Bytes& b, size_t at) {
  return b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (static_cast<uint32_t>(b[at + 3]) << 24);
}

TEST(TensorIo, NpzTruncatedAtEveryOffset) {
  for (const char* name : {"small.npz", "small_compressed.npz"}) {
    const Bytes file = fixture(name);
    for (size_t n = 0; n < file.size(); ++n) {
      const Status s = read_npz_named(Bytes(file.begin(), file.begin() + n), name);
      ASSERT_FALSE(s.ok()) << name << " truncated to " << n << " bytes was accepted";
      EXPECT_EQ(s.message().rfind(std::string(name) + ": ", 0), 0u) << s.message();
    }
  }
}

TEST(TensorIo, NpzCorruptMembers) {
  const Bytes file = fixture("small.npz");
  Bytes b = file;
  b[60] ^= 1;  // inside member b.npy
  expect_error(read_npz_named(b), {"in.npz: member 'b.npy': CRC-32 is", "but the directory says"});

  const TensorMap one = {{"q", all_dtypes().at("f32")}};
  Bytes z;
  ASSERT_TRUE(write_npz(one, &z).ok());
  // The member's npy header claims more data than the member holds.
  const std::string from = "'shape': (2, 3)";
  const std::string to = "'shape': (4, 6)";
  auto it = std::search(z.begin(), z.end(), from.begin(), from.end());
  ASSERT_NE(it, z.end());
  std::copy(to.begin(), to.end(), it);
  const size_t c = central_entry(z, 0);
  const uint32_t crc = static_cast<uint32_t>(crc32(0, z.data() + 55, get32(z, c + 24)));
  put32(&z, c + 16, crc);
  expect_error(read_npz_named(z),
               {"in.npz: member 'q.npy': header says shape (4, 6) of <f4 = 96 bytes but 24 bytes remain"});

  // Central directory fields.
  struct Patch {
    size_t field;
    uint32_t value;
    std::string want;
  };
  const std::vector<Patch> patches = {
      {10, 12, "compression method 12 is not supported"},
      {8, 1, "encrypted"},
      {20, 1000, "stored member has compressed size 1000"},
      {42, 1, "local header at offset 1 has a bad signature"},
      {42, 0x7FFFFFFF, "local header offset 2147483647 is outside"},
  };
  for (const Patch& p : patches) {
    Bytes y = file;
    const size_t e = central_entry(y, 1);
    if (p.field == 8 || p.field == 10) {
      y[e + p.field] = static_cast<uint8_t>(p.value);
      y[e + p.field + 1] = 0;
    } else {
      put32(&y, e + p.field, p.value);
    }
    expect_error(read_npz_named(y), {"in.npz: member 'f16.npy': ", p.want});
  }
  // Two entries pointing at the same member: duplicate name, then overlap once renamed.
  Bytes y = file;
  const size_t e0 = central_entry(y, 0), e1 = central_entry(y, 1);
  std::copy(y.begin() + e0, y.begin() + e1, y.begin() + e1);  // entry 1 := entry 0 (b.npy is shorter)
  expect_error(read_npz_named(y), {"in.npz: member 'b.npy': duplicate member name"});
  // Bad end record.
  y = file;
  y[y.size() - 22] = 'X';
  expect_error(read_npz_named(y), {"in.npz: no zip end-of-central-directory record"});
  y = file;
  put32(&y, y.size() - 6, 0xFFFFFF00u);
  expect_error(read_npz_named(y), {"in.npz: central directory", "outside the archive"});
  y = file;
  y[y.size() - 12] = 0xFF;  // member count
  y[y.size() - 14] = 0xFF;
  expect_error(read_npz_named(y), {"in.npz: end record claims 255 members"});
}

TEST(TensorIo, NpzDeflateSizeLies) {
  const Bytes file = fixture("small_compressed.npz");
  const size_t e = central_entry(file, 0);  // f32.npy
  const uint32_t size = get32(file, e + 24);
  Bytes b = file;
  put32(&b, e + 24, size + 1);
  expect_error(read_npz_named(b),
               {"in.npz: member 'f32.npy': ", "inflates to 152 bytes but the directory says 153"});
  b = file;
  put32(&b, e + 24, size - 1);
  expect_error(read_npz_named(b), {"in.npz: member 'f32.npy': ", "inflates to more than the 151 bytes"});
  b = file;
  put32(&b, e + 24, 0xFFFFFFF0u);  // claims 4 GiB: fails without allocating it
  expect_error(read_npz_named(b), {"in.npz: member 'f32.npy': ", "inflates to 152 bytes"});
  b = file;
  b[30 + 7 + 20 + 10] ^= 0xFF;  // inside the deflate stream of f32.npy (local header 30 + name 7 + extra 20)
  EXPECT_FALSE(read_npz_named(b).ok());
}

// A minimal zip writer for cases numpy never produces: foreign members, zip64 records, comments.
struct ZipEntry {
  std::string name;
  Bytes data;
};

void put_le(Bytes* b, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

Bytes make_zip(const std::vector<ZipEntry>& entries, bool zip64, const std::string& comment = "") {
  Bytes z, cd;
  for (const ZipEntry& e : entries) {
    const uint64_t offset = z.size();
    const uint32_t crc = static_cast<uint32_t>(crc32(0, e.data.data(), static_cast<uInt>(e.data.size())));
    put_le(&z, 0x04034b50, 4);
    put_le(&z, 20, 2);
    put_le(&z, 0, 2);
    put_le(&z, 0, 2);
    put_le(&z, 0, 4);
    put_le(&z, crc, 4);
    put_le(&z, e.data.size(), 4);
    put_le(&z, e.data.size(), 4);
    put_le(&z, e.name.size(), 2);
    put_le(&z, 0, 2);
    z.insert(z.end(), e.name.begin(), e.name.end());
    z.insert(z.end(), e.data.begin(), e.data.end());
    put_le(&cd, 0x02014b50, 4);
    put_le(&cd, 45, 2);
    put_le(&cd, 45, 2);
    put_le(&cd, 0, 2);
    put_le(&cd, 0, 2);
    put_le(&cd, 0, 4);
    put_le(&cd, crc, 4);
    put_le(&cd, zip64 ? 0xFFFFFFFFu : e.data.size(), 4);
    put_le(&cd, zip64 ? 0xFFFFFFFFu : e.data.size(), 4);
    put_le(&cd, e.name.size(), 2);
    put_le(&cd, zip64 ? 28 : 0, 2);
    put_le(&cd, 0, 2);  // comment length
    put_le(&cd, 0, 2);  // disk
    put_le(&cd, 0, 2);  // internal attributes
    put_le(&cd, 0, 4);  // external attributes
    put_le(&cd, zip64 ? 0xFFFFFFFFu : offset, 4);
    cd.insert(cd.end(), e.name.begin(), e.name.end());
    if (zip64) {
      put_le(&cd, 1, 2);
      put_le(&cd, 24, 2);
      put_le(&cd, e.data.size(), 8);
      put_le(&cd, e.data.size(), 8);
      put_le(&cd, offset, 8);
    }
  }
  const uint64_t cd_offset = z.size();
  z.insert(z.end(), cd.begin(), cd.end());
  if (zip64) {
    const uint64_t rec = z.size();
    put_le(&z, 0x06064b50, 4);
    put_le(&z, 44, 8);
    put_le(&z, 45, 2);
    put_le(&z, 45, 2);
    put_le(&z, 0, 8);
    put_le(&z, entries.size(), 8);
    put_le(&z, entries.size(), 8);
    put_le(&z, cd.size(), 8);
    put_le(&z, cd_offset, 8);
    put_le(&z, 0x07064b50, 4);
    put_le(&z, 0, 4);
    put_le(&z, rec, 8);
    put_le(&z, 1, 4);
  }
  put_le(&z, 0x06054b50, 4);
  put_le(&z, 0, 4);
  put_le(&z, zip64 ? 0xFFFF : entries.size(), 2);
  put_le(&z, zip64 ? 0xFFFF : entries.size(), 2);
  put_le(&z, zip64 ? 0xFFFFFFFFu : cd.size(), 4);
  put_le(&z, zip64 ? 0xFFFFFFFFu : cd_offset, 4);
  put_le(&z, comment.size(), 2);
  z.insert(z.end(), comment.begin(), comment.end());
  return z;
}

TEST(TensorIo, NpzZip64CommentsAndForeignMembers) {
  const TensorMap m = all_dtypes();
  Bytes q, k;
  ASSERT_TRUE(write_npy(m.at("f32"), &q).ok());
  ASSERT_TRUE(write_npy(m.at("e4m3"), &k).ok());
  for (bool zip64 : {false, true}) {
    const Bytes z = make_zip({{"q.npy", q}, {"sub/k.npy", k}}, zip64, "comment PK\x05\x06");
    TensorMap out;
    const Status s = read_npz(z.data(), z.size(), "in.npz", &out);
    ASSERT_TRUE(s.ok()) << s.message();
    expect_same({{"q", m.at("f32")}, {"sub/k", m.at("e4m3")}}, out);
  }
  Bytes z = make_zip({{"q.npy", q}, {"notes.txt", bytes_of("hi")}}, false);
  expect_error(read_npz_named(z), {"in.npz: member 'notes.txt': not a '<name>.npy' member"});
  z = make_zip({{".npy", q}}, false);
  expect_error(read_npz_named(z), {"in.npz: member '.npy': not a '<name>.npy' member"});
  z = make_zip({{"q.npy", q}, {"q.npy", q}}, false);
  expect_error(read_npz_named(z), {"in.npz: member 'q.npy': duplicate member name"});
  z = make_zip({{"q.npy", Bytes(q.begin(), q.begin() + 20)}}, false);
  expect_error(read_npz_named(z), {"in.npz: member 'q.npy': ", "header length"});
  // zip64 extra field cut short.
  z = make_zip({{"q.npy", q}}, true);
  const size_t e = 30 + 5 + q.size();  // the central entry follows the only member
  ASSERT_EQ(get32(z, e), 0x02014b50u);
  z[e + 46 + 5 + 2] = 16;  // field length 16 < the 24 bytes three 0xFFFFFFFF fields need
  expect_error(read_npz_named(z), {"in.npz: member 'q.npy': zip64 extra field is too short"});
  // Local header whose name differs from the directory's.
  z = make_zip({{"q.npy", q}}, false);
  z[30] = 'w';
  expect_error(read_npz_named(z), {"in.npz: member 'q.npy': local header names the member differently"});
}

// ---- malformed .safetensors -------------------------------------------------------------------------

Bytes safetensors_with(const std::string& header, size_t data_bytes) {
  Bytes b;
  put_le(&b, header.size(), 8);
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes);
  return b;
}

Status read_st(const Bytes& b, const std::string& label = "in.safetensors") {
  TensorMap m;
  return read_safetensors(b.data(), b.size(), label, &m);
}

TEST(TensorIo, SafetensorsTruncatedAtEveryOffset) {
  const Bytes file = fixture("small.safetensors");
  for (size_t n = 0; n < file.size(); ++n) {
    const Status s = read_st(Bytes(file.begin(), file.begin() + n), "small.safetensors");
    ASSERT_FALSE(s.ok()) << "truncated to " << n << " bytes was accepted";
    EXPECT_EQ(s.message().rfind("small.safetensors: ", 0), 0u) << s.message();
  }
}

TEST(TensorIo, SafetensorsHeaderErrors) {
  ASSERT_TRUE(read_st(safetensors_with("{}", 0)).ok());
  ASSERT_TRUE(
      read_st(safetensors_with(R"({"w":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}}  )", 4)).ok());
  struct Case {
    std::string header;
    size_t data;
    std::string want;
  };
  const std::string w = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::vector<Case> cases = {
      {"", 0, "does not start with '{'"},
      {" {}", 0, "does not start with '{'"},
      {"{\"w\":", 0, "bad JSON header"},
      {"[]", 0, "does not start with '{'"},
      {R"({"w":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[0,2]}})", 2,
       "tensor 'w': unsupported dtype \"F8_E5M2\""},
      {R"({"w":{"dtype":42,"shape":[2],"data_offsets":[0,2]}})", 2, "tensor 'w': unsupported dtype 42"},
      {R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8,
       "tensor 'w': shape dim -2 is negative"},
      {R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8,
       "shape dim 2.0 is not a non-negative integer"},
      {R"({"w":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}})", 8,
       "is not a non-negative integer"},
      {R"({"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}})", 8,
       "does not fit int64"},
      {R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
       "more than 2^63 elements"},
      {R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}})", 8,
       "overflows int64 bytes"},
      {R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8, "shape is not an array"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", 8, "not a [begin, end] pair"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,9]}})", 8,
       "data_offsets [0, 9] are outside the 8-byte data area"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "data_offsets [8, 0] are outside"},
      {R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
       "data_offsets [0, 8] span 8 bytes but shape (3) of F32 needs 12"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", 8, "unexpected key 'extra'"},
      {R"({"w":{"dtype":"F32","shape":[2]}})", 8, "tensor 'w': missing 'data_offsets'"},
      {R"({"w":[1]})", 8, "tensor 'w': entry is not a JSON object"},
      {w + "", 9, "1 bytes after the last tensor's data are not covered"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       8, "duplicate key 'w'"},
      {R"({"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, "duplicate key 'dtype'"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
       8, "tensor 'b': data_offsets [4, 8] overlap tensor 'a' [0, 8]"},
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8,
       "tensor 'a': data_offsets [4, 8] leave bytes [0, 4)"},
      {R"({"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", 0, "are outside the 0-byte data area"},
      {R"({"__metadata__":{"k":1}})", 0, "__metadata__ value for 'k' is not a string"},
      {R"({"__metadata__":"k"})", 0, "__metadata__ is not an object"},
      {R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0, "empty tensor name"},
      {R"({"w":[[[[[[[[[[1]]]]]]]]]]})", 0, "nests deeper than 8"},
  };
  for (const Case& c : cases)
    expect_error(read_st(safetensors_with(c.header, c.data)), {"in.safetensors: ", c.want});
  Bytes b = safetensors_with(R"({"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", 2);
  b.back() = 7;
  expect_error(read_st(b), {"in.safetensors: tensor 'a': BOOL element (1) has byte 7"});
  b = safetensors_with("{}", 0);
  put32(&b, 4, 0x80000000u);  // header length 2^63 + 2
  expect_error(read_st(b),
               {"in.safetensors: header length 9223372036854775810 exceeds the 2 bytes after it"});
}

// ---- every single-byte corruption and random mutations: errors or success, never a crash --------

TEST(TensorIo, MutatedInputsNeverCrash) {
  struct Input {
    const char* name;
    FileFormat format;
  };
  std::mt19937 rng(12345);
  int accepted = 0, rejected = 0;
  for (const Input& in : {Input{"f32_2x3.npy", FileFormat::Npy}, Input{"small.npz", FileFormat::Npz},
                          Input{"small_compressed.npz", FileFormat::Npz},
                          Input{"small.safetensors", FileFormat::Safetensors}}) {
    const Bytes file = fixture(in.name);
    auto run = [&](const Bytes& b) {
      TensorMap m;
      const Status s = read_tensors_from_buffer(in.format, b.data(), b.size(), in.name, &m);
      if (s.ok()) {
        ++accepted;
        for (const auto& [name, t] : m) EXPECT_TRUE(t.check().ok()) << in.name << " " << name;
      } else {
        ++rejected;
        EXPECT_EQ(s.message().rfind(std::string(in.name) + ": ", 0), 0u) << s.message();
      }
    };
    for (size_t i = 0; i < file.size(); ++i) {
      for (uint8_t v : {uint8_t{0}, uint8_t{0xFF}, static_cast<uint8_t>(file[i] ^ 0x01)}) {
        Bytes b = file;
        b[i] = v;
        run(b);
      }
    }
    for (int iter = 0; iter < 2000; ++iter) {
      Bytes b = file;
      const int edits = 1 + static_cast<int>(rng() % 8);
      for (int e = 0; e < edits; ++e) b[rng() % b.size()] = static_cast<uint8_t>(rng());
      run(b);
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(accepted, 0);  // corruptions of padding or tensor data still parse
}

// ---- expect_tensor ------------------------------------------------------------------------------------

TEST(TensorIo, ExpectTensor) {
  const TensorMap m = all_dtypes();
  const Tensor* t = nullptr;
  ASSERT_TRUE(expect_tensor(m, "in.npz", "f32", {2, 3}, &t).ok());
  EXPECT_EQ(t, &m.at("f32"));
  ASSERT_TRUE(expect_tensor(m, "in.npz", "f32", {-1, 3}, nullptr).ok());
  ASSERT_TRUE(expect_tensor(m, "in.npz", "scalar", {}, nullptr).ok());
  expect_error(expect_tensor(m, "in.npz", "u32", {8}, &t),
               {"in.npz: tensor 'u32' has shape (2) but the problem needs (8)"});
  expect_error(expect_tensor(m, "in.npz", "f32", {-1, 4}, &t),
               {"has shape (2, 3) but the problem needs (*, 4)"});
  expect_error(expect_tensor(m, "in.npz", "f32", {2, 3, 1}, &t), {"needs (2, 3, 1)"});
  expect_error(expect_tensor(m, "in.npz", "w", {2}, &t), {"in.npz: missing tensor 'w'", "bf16, bool"});
  expect_error(expect_tensor({}, "x.safetensors", "w", {2}, &t),
               {"x.safetensors: missing tensor 'w' (the file has: nothing)"});
}

}  // namespace
}  // namespace indexlab::compare
