/// Tests of compare/problem_io.h: problem and repro round trips (flat and paged, all precisions),
/// problem JSON errors, inputs-file errors and candidate output files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compare/judge.h"
#include "compare/problem.h"
#include "compare/problem_io.h"
#include "compare/registry.h"
#include "compare/tensor_io.h"
#include "compare/workloads.h"
#include "tests/common/random_problem.h"

namespace indexlab::compare {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

void expect_error(const Status& s, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(s.ok()) << "expected an error containing '" << *parts.begin() << "'";
  for (const std::string& p : parts) EXPECT_TRUE(contains(s.message(), p)) << s.message() << "\n  lacks: " << p;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

const ref::Precision kPrecisions[] = {ref::Precision::kFp32, ref::Precision::kBf16, ref::Precision::kFp8};

/// Each test works in its own scratch directory, removed afterwards.
class ProblemIo : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("indexlab_problem_io_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write_text(const std::string& name, const std::string& text) const {
    std::ofstream f(path(name), std::ios::binary);
    f << text;
  }
  fs::path dir_;
};

/// A ragged HISA problem with every optional tensor and non-default options.
Problem flat_problem(ref::Precision prec, uint64_t salt = 0) {
  std::mt19937_64 rng(testing::test_seed() + salt);
  Problem p;
  p.name = "flat_case";
  p.path = ref::Path::kHisa;
  p.options.index_base = ref::IndexBase::kAbsolute;
  p.options.hisa_block = 16;
  p.options.hisa_m = 4;
  p.options.hisa_bf16_block_scores = true;
  p.options.strict_pooling = true;
  p.options.align = ref::BlockAlign::kRelease;
  p.options.misa_heads = 3;
  p.options.misa_block = 48;
  p.options.routing = ref::Routing::kQNorm;
  p.options.dagger_k1 = 99;
  p.flat = testing::random_inputs(rng, prec, 8, 100, 4, 16, 12, /*causal=*/false);
  for (int i = 0; i < 8; ++i) {  // ragged rows of 10 to 45 keys
    p.flat.ks[i] = (i * 13) % 50;
    p.flat.ke[i] = p.flat.ks[i] + 10 + 5 * i;
  }
  p.flat.seq_end.resize(8);
  for (int i = 0; i < 8; ++i) p.flat.seq_end[i] = std::min(100, p.flat.ke[i] + 3 * i);
  if (p.flat.q_scale.empty()) p.flat.q_scale.assign(8 * 4, 0.8125f);
  if (p.flat.k_scale.empty())
    for (int j = 0; j < 100; ++j) p.flat.k_scale.push_back(0.75f + 0.0137f * static_cast<float>(j % 9));
  return p;
}

Problem paged_problem(ref::Precision prec, uint64_t salt = 0) {
  std::mt19937_64 rng(testing::test_seed() + salt);
  const ref::Inputs flat = testing::random_inputs(rng, prec, 6, 150, 4, 16, 12);
  Problem p;
  p.name = "paged_case";
  p.path = ref::Path::kDsa;
  p.paged = true;
  p.options.index_base = ref::IndexBase::kAbsolute;
  EXPECT_TRUE(to_paged(flat, 2, testing::test_seed() + 11, &p.paged_in).ok());
  return p;
}

void expect_same_problem(const Problem& a, const Problem& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.paged, b.paged);
  EXPECT_EQ(options_to_json(a.options), options_to_json(b.options));
  EXPECT_EQ(problem_to_json(a), problem_to_json(b));
  EXPECT_EQ(a.precision(), b.precision());
  if (!a.paged) {
    const ref::Inputs &x = a.flat, &y = b.flat;
    EXPECT_EQ(x.shape.nq, y.shape.nq);
    EXPECT_EQ(x.shape.nk, y.shape.nk);
    EXPECT_EQ(x.shape.h, y.shape.h);
    EXPECT_EQ(x.shape.d, y.shape.d);
    EXPECT_EQ(x.shape.k, y.shape.k);
    EXPECT_TRUE(same_bits(x.q, y.q));
    EXPECT_TRUE(same_bits(x.k, y.k));
    EXPECT_TRUE(same_bits(x.k_scale, y.k_scale));
    EXPECT_TRUE(same_bits(x.w, y.w));
    EXPECT_TRUE(same_bits(x.q_scale, y.q_scale));
    EXPECT_EQ(x.ks, y.ks);
    EXPECT_EQ(x.ke, y.ke);
    EXPECT_EQ(x.seq_end, y.seq_end);
  } else {
    const ref::PagedInputs &x = a.paged_in, &y = b.paged_in;
    EXPECT_EQ(x.h, y.h);
    EXPECT_EQ(x.d, y.d);
    EXPECT_EQ(x.k, y.k);
    EXPECT_EQ(x.next_n, y.next_n);
    EXPECT_EQ(x.batch, y.batch);
    EXPECT_EQ(x.page_tokens, y.page_tokens);
    EXPECT_EQ(x.num_pages, y.num_pages);
    EXPECT_EQ(x.max_pages, y.max_pages);
    EXPECT_EQ(x.cache, y.cache);
    EXPECT_EQ(x.block_table, y.block_table);
    EXPECT_EQ(x.context_lens, y.context_lens);
    EXPECT_TRUE(same_bits(x.q, y.q));
    EXPECT_TRUE(same_bits(x.w, y.w));
    EXPECT_TRUE(same_bits(x.q_scale, y.q_scale));
  }
}

DType stored_dtype(ref::Precision p) {
  return p == ref::Precision::kFp8 ? DType::F8_E4M3 : p == ref::Precision::kBf16 ? DType::BF16 : DType::F32;
}

// ---- problem round trips ------------------------------------------------------------------

TEST_F(ProblemIo, FlatRoundTripInEveryPrecision) {
  for (ref::Precision prec : kPrecisions) {
    SCOPED_TRACE(ref::precision_name(prec));
    const Problem p = flat_problem(prec);
    const std::string d = path(ref::precision_name(prec));
    ASSERT_TRUE(save_problem(p, d).ok());
    TensorMap t;
    ASSERT_TRUE(read_tensors(d + "/inputs.npz", &t).ok());
    EXPECT_EQ(t.at("q").dtype, stored_dtype(prec));
    EXPECT_EQ(t.at("k").dtype, stored_dtype(prec));
    EXPECT_EQ(t.at("q").shape, (std::vector<int64_t>{8, 4, 16}));
    EXPECT_EQ(t.at("w").dtype, DType::F32);
    EXPECT_EQ(t.at("ks").dtype, DType::I32);
    for (const char* name : {"k_scale", "q_scale", "seq_end"}) EXPECT_EQ(t.count(name), 1u) << name;
    Problem back;
    const Status st = load_problem(d + "/problem.json", d + "/inputs.npz", &back);
    ASSERT_TRUE(st.ok()) << st.message();
    expect_same_problem(p, back);
  }
}

TEST_F(ProblemIo, PagedRoundTripInEveryPrecision) {
  for (ref::Precision prec : kPrecisions) {
    SCOPED_TRACE(ref::precision_name(prec));
    const Problem p = paged_problem(prec);
    const std::string d = path(ref::precision_name(prec));
    ASSERT_TRUE(save_problem(p, d).ok());
    TensorMap t;
    ASSERT_TRUE(read_tensors(d + "/inputs.npz", &t).ok());
    EXPECT_EQ(t.at("q").dtype, stored_dtype(prec));
    EXPECT_EQ(t.at("kv_cache").dtype, DType::U8);
    EXPECT_EQ(t.at("kv_cache").shape, (std::vector<int64_t>{p.paged_in.num_pages, p.paged_in.page_bytes()}));
    EXPECT_EQ(t.count("k"), 0u);
    Problem back;
    const Status st = load_problem(d + "/problem.json", d + "/inputs.npz", &back);
    ASSERT_TRUE(st.ok()) << st.message();
    expect_same_problem(p, back);
  }
}

TEST_F(ProblemIo, NameDefaultsToTheDirectory) {
  Problem p = flat_problem(ref::Precision::kFp8);
  p.name.clear();
  ASSERT_TRUE(save_problem(p, path("my_case")).ok());
  Problem back;
  ASSERT_TRUE(load_problem(path("my_case/problem.json"), path("my_case/inputs.npz"), &back).ok());
  EXPECT_EQ(back.name, "my_case");
}

// ---- repro round trips --------------------------------------------------------------------

/// A wrong candidate with logits: a dropped key, a duplicate and perturbed logits.
CandidateOutput wrong_candidate(const Problem& p) {
  Registry reg;
  register_builtin(&reg);
  CandidateOutput c;
  EXPECT_TRUE(reg.find(std::string("ref.") + ref::path_name(p.path))->run(p, &c).ok());
  const int K = c.k;
  c.index[0 * K + 1] = -1;
  c.index[1 * K + 2] = c.index[1 * K + 3];
  for (size_t t = 0; t < c.logits.size(); t += 5)
    if (std::isfinite(c.logits[t])) c.logits[t] *= 1.0f + 0x1p-18f;
  return c;
}

void expect_same_output(const CandidateOutput& a, const CandidateOutput& b) {
  EXPECT_EQ(a.nq, b.nq);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.index_base, b.index_base);
  EXPECT_EQ(a.index, b.index);
  EXPECT_EQ(a.logits_cols, b.logits_cols);
  EXPECT_TRUE(same_bits(a.logits, b.logits));
}

TEST_F(ProblemIo, ReproRoundTripGivesTheSameReport) {
  for (bool paged : {false, true}) {
    SCOPED_TRACE(paged ? "paged" : "flat");
    const Problem p = paged ? paged_problem(ref::Precision::kFp8, 1) : flat_problem(ref::Precision::kBf16, 1);
    const CandidateOutput c = wrong_candidate(p);
    JudgeOptions o;
    o.worst_rows = 100;
    ASSERT_TRUE(tolerance_by_name("tensor_core", p.h(), p.d(), &o.tolerance).ok());
    Report before;
    ASSERT_TRUE(judge(p, c, o, &before).ok());
    EXPECT_EQ(before.selection.invalid, 1);
    EXPECT_GT(before.logits.max_ulp, 0u);

    const std::string d = path(paged ? "repro_paged" : "repro_flat");
    ASSERT_TRUE(write_repro(d, p, c, &before).ok());
    for (const char* f : {"problem.json", "inputs.npz", "candidate.npz", "report.json"})
      EXPECT_TRUE(fs::exists(fs::path(d) / f)) << f;
    Problem p2;
    CandidateOutput c2;
    const Status st = read_repro(d, &p2, &c2);
    ASSERT_TRUE(st.ok()) << st.message();
    expect_same_problem(p, p2);
    expect_same_output(c, c2);
    Report after;
    ASSERT_TRUE(judge(p2, c2, o, &after).ok());
    EXPECT_EQ(after.to_json().dump(), before.to_json().dump());
    std::ifstream rf(fs::path(d) / "report.json");
    EXPECT_EQ(json::parse(rf), before.to_json());
  }
}

TEST_F(ProblemIo, ReproWithoutReportOrLogits) {
  const Problem p = flat_problem(ref::Precision::kFp32);
  CandidateOutput c = wrong_candidate(p);
  c.logits.clear();
  c.logits_cols = 0;
  const std::string d = path("repro");
  ASSERT_TRUE(write_repro(d, p, c, nullptr).ok());
  EXPECT_FALSE(fs::exists(fs::path(d) / "report.json"));
  Problem p2;
  CandidateOutput c2;
  ASSERT_TRUE(read_repro(d, &p2, &c2).ok());
  expect_same_output(c, c2);
  expect_error(read_repro(path("nowhere"), &p2, &c2), {"nowhere", "not a repro directory"});
  fs::remove(fs::path(d) / "candidate.npz");
  expect_error(read_repro(d, &p2, &c2), {"candidate.npz"});
}

// ---- problem JSON errors ------------------------------------------------------------------

Status from_json_with(const std::function<void(json&)>& edit, bool paged = false) {
  json j = problem_to_json(paged ? paged_problem(ref::Precision::kFp8) : flat_problem(ref::Precision::kFp8));
  edit(j);
  Problem p;
  return problem_from_json(j, &p);
}

TEST_F(ProblemIo, JsonErrorsNameTheField) {
  EXPECT_TRUE(from_json_with([](json&) {}).ok());
  EXPECT_TRUE(from_json_with([](json&) {}, true).ok());
  expect_error(from_json_with([](json& j) { j.erase("path"); }), {"missing field 'path'"});
  expect_error(from_json_with([](json& j) { j.erase("precision"); }), {"missing field 'precision'"});
  expect_error(from_json_with([](json& j) { j.erase("nk"); }), {"missing field 'nk'"});
  expect_error(from_json_with([](json& j) { j.erase("k"); }), {"missing field 'k'"});
  expect_error(from_json_with([](json& j) { j.erase("max_pages"); }, true), {"missing field 'max_pages'"});
  expect_error(from_json_with([](json& j) { j["h"] = "four"; }), {"field 'h' has the wrong type"});
  expect_error(from_json_with([](json& j) { j["nq"] = true; }), {"field 'nq' has the wrong type"});
  expect_error(from_json_with([](json& j) { j["path"] = 3; }), {"field 'path' has the wrong type"});
  expect_error(from_json_with([](json& j) { j["strict_pooling"] = "yes"; }), {"field 'strict_pooling' has the wrong type"});
  expect_error(from_json_with([](json& j) { j["hisa"]["m"] = "many"; }), {"field 'm' has the wrong type"});
  expect_error(from_json_with([](json& j) { j["path"] = "dense"; }), {"path 'dense' is not one of dsa, hisa"});
  expect_error(from_json_with([](json& j) { j["precision"] = "fp16"; }), {"precision 'fp16' is not one of fp32, bf16, fp8"});
  expect_error(from_json_with([](json& j) { j["layout"] = "tiled"; }), {"layout 'tiled'"});
  expect_error(from_json_with([](json& j) { j["index_base"] = "offset"; }), {"index_base 'offset'"});
  expect_error(from_json_with([](json& j) { j["align"] = "page"; }), {"align 'page'"});
  expect_error(from_json_with([](json& j) { j["misa"]["routing"] = "random"; }), {"routing 'random'"});
  expect_error(from_json_with([](json& j) { j["hisa"] = 3; }), {"'hisa' must be an object"});
  expect_error(from_json_with([](json& j) { j["misa"] = json::array(); }), {"'misa' must be an object"});
  Problem p;
  expect_error(problem_from_json(json::array(), &p), {"expected an object"});
}

TEST_F(ProblemIo, JsonNumbersMustFitTheField) {
  // Regression: JSON numbers were once converted silently ("h": 4.5 read as 4, 2^32 + 1 as 1,
  // a valid problem of another shape); now a wrong type or range names the field.
  expect_error(from_json_with([](json& j) { j["h"] = 4.5; }), {"'h'"});
  expect_error(from_json_with([](json& j) { j["h"] = 4294967297ull; }), {"'h'"});
}

TEST_F(ProblemIo, LoadProblemErrorsNameTheFile) {
  const Problem p = flat_problem(ref::Precision::kFp8);
  ASSERT_TRUE(save_problem(p, dir_.string()).ok());
  json j = problem_to_json(p);
  j["precision"] = "int4";
  write_text("bad.json", j.dump());
  Problem back;
  expect_error(load_problem(path("bad.json"), path("inputs.npz"), &back),
               {"bad.json: ", "precision 'int4' is not one of"});
  j.erase("precision");
  write_text("bad.json", j.dump());
  expect_error(load_problem(path("bad.json"), path("inputs.npz"), &back), {"bad.json: ", "missing field 'precision'"});
  write_text("broken.json", "{\"path\": \"dsa\",");
  expect_error(load_problem(path("broken.json"), path("inputs.npz"), &back), {"broken.json", "not valid JSON"});
  expect_error(load_problem(path("absent.json"), path("inputs.npz"), &back), {"absent.json", "cannot open"});
  // Options that the path cannot run are named with the JSON file.
  j = problem_to_json(p);
  j["hisa"]["m"] = 1;
  write_text("m1.json", j.dump());
  expect_error(load_problem(path("m1.json"), path("inputs.npz"), &back), {"m1.json: ", "hisa_m"});
}

// ---- inputs-file errors -------------------------------------------------------------------

TEST_F(ProblemIo, InputsFileErrorsNameFileAndTensor) {
  const Problem p = flat_problem(ref::Precision::kFp8);  // nq 8, nk 100, h 4, d 16
  ASSERT_TRUE(save_problem(p, dir_.string()).ok());
  TensorMap good;
  ASSERT_TRUE(read_tensors(path("inputs.npz"), &good).ok());
  const std::string pj = path("problem.json");
  Problem back;

  auto load_with = [&](const TensorMap& t, const std::string& name) {
    EXPECT_TRUE(write_tensors(path(name), t).ok());
    return load_problem(pj, path(name), &back);
  };
  TensorMap t = good;
  t.erase("w");
  expect_error(load_with(t, "no_w.npz"), {"no_w.npz: missing tensor 'w'"});
  t = good;
  t.erase("k");
  expect_error(load_with(t, "no_k.safetensors"), {"no_k.safetensors: missing tensor 'k'"});

  t = good;
  ASSERT_TRUE(Tensor::from_i32({7}, std::vector<int32_t>(7, 0), &t["ks"]).ok());
  expect_error(load_with(t, "short_ks.npz"), {"short_ks.npz: tensor 'ks' has shape (7) but the problem needs (8)"});
  t = good;
  ASSERT_TRUE(Tensor::from_f32({8, 4, 15}, std::vector<float>(8 * 4 * 15, 0.5f), &t["q"]).ok());
  expect_error(load_with(t, "narrow_q.npz"), {"narrow_q.npz: tensor 'q' has shape (8, 4, 15) but the problem needs (8, 4, 16)"});
  t = good;
  ASSERT_TRUE(Tensor::from_f32({99}, std::vector<float>(99, 1.0f), &t["k_scale"]).ok());
  expect_error(load_with(t, "scales.npz"), {"scales.npz: tensor 'k_scale' has shape (99)"});
  t = good;
  ASSERT_TRUE(Tensor::from_f32({8}, std::vector<float>(8, 0.5f), &t["ke"]).ok());
  expect_error(load_with(t, "float_ke.npz"), {"float_ke.npz: tensor 'ke'"});
  // Values the problem cannot hold are named with the file.
  t = good;
  std::vector<int32_t> ke(p.flat.ke);
  ke[5] = 101;
  ASSERT_TRUE(Tensor::from_i32({8}, ke, &t["ke"]).ok());
  expect_error(load_with(t, "long_ke.npz"), {"long_ke.npz: ", "ke[5] = 101 exceeds nk = 100"});
  // The good file loads.
  EXPECT_TRUE(load_with(good, "good.npz").ok());
}

TEST_F(ProblemIo, PagedInputsFileErrorsNameFileAndTensor) {
  const Problem p = paged_problem(ref::Precision::kFp8);
  ASSERT_TRUE(save_problem(p, dir_.string()).ok());
  TensorMap good;
  ASSERT_TRUE(read_tensors(path("inputs.npz"), &good).ok());
  Problem back;
  auto load_with = [&](const TensorMap& t, const std::string& name) {
    EXPECT_TRUE(write_tensors(path(name), t).ok());
    return load_problem(path("problem.json"), path(name), &back);
  };
  TensorMap t = good;
  t.erase("kv_cache");
  expect_error(load_with(t, "no_cache.npz"), {"no_cache.npz: missing tensor 'kv_cache'"});
  t = good;
  t.erase("block_table");
  expect_error(load_with(t, "no_table.npz"), {"no_table.npz: missing tensor 'block_table'"});
  t = good;
  const Tensor& kv = good.at("kv_cache");
  ASSERT_TRUE(Tensor::from_u8({kv.shape[0] - 1, kv.shape[1]},
                              std::vector<uint8_t>(kv.data.begin(), kv.data.end() - kv.shape[1]), &t["kv_cache"])
                  .ok());
  expect_error(load_with(t, "short_cache.npz"), {"short_cache.npz: tensor 'kv_cache' has shape"});
  t = good;
  ASSERT_TRUE(Tensor::from_i32({2}, {100, 100}, &t["context_lens"]).ok());
  expect_error(load_with(t, "ctx.npz"), {"ctx.npz: tensor 'context_lens' has shape (2) but the problem needs (3)"});
  EXPECT_TRUE(load_with(good, "good.npz").ok());
}

// ---- candidate output files ---------------------------------------------------------------

TEST_F(ProblemIo, OutputFromTensorsAcceptsInt64AndTheNameIndex) {
  const Problem p = flat_problem(ref::Precision::kFp8);  // [8, 12], absolute indices
  const CandidateOutput c = wrong_candidate(p);
  TensorMap t;
  ASSERT_TRUE(output_to_tensors(c, &t).ok());
  EXPECT_EQ(t.at("indices").dtype, DType::I32);
  CandidateOutput back;
  ASSERT_TRUE(output_from_tensors(t, "out.npz", p, &back).ok());
  expect_same_output(c, back);

  std::vector<int64_t> wide(c.index.begin(), c.index.end());
  Tensor i64;
  ASSERT_TRUE(Tensor::from_i64({8, 12}, wide, &i64).ok());
  for (const char* name : {"indices", "index"}) {
    TensorMap m;
    m[name] = i64;
    CandidateOutput o;
    const Status st = output_from_tensors(m, "out.npz", p, &o);
    ASSERT_TRUE(st.ok()) << name << ": " << st.message();
    EXPECT_EQ(o.index, c.index) << name;
    EXPECT_EQ(o.nq, 8);
    EXPECT_EQ(o.k, 12);
    EXPECT_EQ(o.index_base, ref::IndexBase::kAbsolute);
    EXPECT_TRUE(o.logits.empty());
  }
  // Through a file: int64 'index' in a .npy named by its stem.
  TensorMap m;
  m["index"] = i64;
  ASSERT_TRUE(write_tensors(path("index.npy"), m).ok());
  TensorMap read;
  ASSERT_TRUE(read_tensors(path("index.npy"), &read).ok());
  CandidateOutput o;
  ASSERT_TRUE(output_from_tensors(read, path("index.npy"), p, &o).ok());
  EXPECT_EQ(o.index, c.index);
}

TEST_F(ProblemIo, OutputFromTensorsErrors) {
  const Problem p = flat_problem(ref::Precision::kFp8);
  CandidateOutput o;
  TensorMap m;
  expect_error(output_from_tensors(m, "out.npz", p, &o), {"out.npz: missing tensor 'indices'"});
  ASSERT_TRUE(Tensor::from_i32({8, 11}, std::vector<int32_t>(88, -1), &m["indices"]).ok());
  expect_error(output_from_tensors(m, "out.npz", p, &o), {"out.npz: tensor 'indices' has shape (8, 11) but the problem needs (8, 12)"});
  std::vector<int64_t> big(96, -1);
  big[13] = int64_t{1} << 40;
  ASSERT_TRUE(Tensor::from_i64({8, 12}, big, &m["indices"]).ok());
  expect_error(output_from_tensors(m, "out.npz", p, &o), {"out.npz: tensor 'indices'"});
  ASSERT_TRUE(Tensor::from_f32({8, 12}, std::vector<float>(96, 1.0f), &m["indices"]).ok());
  expect_error(output_from_tensors(m, "out.npz", p, &o), {"out.npz: tensor 'indices'"});
  ASSERT_TRUE(Tensor::from_i32({8, 12}, std::vector<int32_t>(96, -1), &m["indices"]).ok());
  ASSERT_TRUE(Tensor::from_f32({8, 99}, std::vector<float>(8 * 99, 0.0f), &m["logits"]).ok());
  expect_error(output_from_tensors(m, "out.npz", p, &o), {"out.npz: tensor 'logits' has shape (8, 99) but the problem needs (8, 100)"});
}

}  // namespace
}  // namespace indexlab::compare
