/// libFuzzer target: a repro directory (problem.json, inputs.npz, candidate.npz) written from the
/// fuzz input into a private temp directory, read with read_repro and, when small, judged.
/// The input holds the three files separated by the 8 bytes "\0IXLSEP\0".
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "compare/judge.h"
#include "compare/problem_io.h"
#include "fuzz/libfuzzer_common.h"

namespace {

const char kSep[8] = {'\0', 'I', 'X', 'L', 'S', 'E', 'P', '\0'};

// A plain buffer (no destructor), so the exit handler that removes the directory can still read it.
char g_dir[4096];

const char* work_dir() {
  if (g_dir[0] == '\0') {
    // tmpfs when there is one: on a disk-backed /tmp the file writes dominate (20x slower).
    const std::filesystem::path base =
        ::access("/dev/shm", W_OK) == 0 ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
    const std::string tmpl = (base / "indexlab-libfuzzer-repro-XXXXXX").string();
    if (tmpl.size() >= sizeof(g_dir)) std::abort();
    std::memcpy(g_dir, tmpl.c_str(), tmpl.size() + 1);
    if (!::mkdtemp(g_dir)) std::abort();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(g_dir, ec);
    });
  }
  return g_dir;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexlab;
  static const char* kNames[3] = {"problem.json", "inputs.npz", "candidate.npz"};
  const std::string dir = work_dir();
  size_t start = 0;
  for (int part = 0; part < 3; ++part) {
    size_t end = size;
    if (part < 2) {
      const uint8_t* hit = nullptr;
      for (size_t t = start; t + sizeof(kSep) <= size; ++t)
        if (std::memcmp(data + t, kSep, sizeof(kSep)) == 0) {
          hit = data + t;
          break;
        }
      end = hit ? static_cast<size_t>(hit - data) : size;
    }
    write_file(dir + "/" + kNames[part], data + start, end - start);
    start = std::min(size, end + sizeof(kSep));
  }
  compare::Problem p;
  compare::CandidateOutput c;
  if (!compare::read_repro(dir, &p, &c).ok()) return 0;
  // Judging runs the reference: only on problems small enough to stay fast.
  compare::FlatView fv;
  if (!compare::flat_view(p, &fv).ok()) return 0;
  const double work = static_cast<double>(fv.in.shape.nq) * (fv.in.shape.nk + 1) * p.h() * p.d();
  if (work > 2e5) return 0;
  compare::JudgeOptions jo;
  compare::Report rep;
  (void)compare::judge(p, c, jo, &rep);
  (void)rep.to_json().dump();
  return 0;
}
