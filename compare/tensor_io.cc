/// Tensor file formats: bounds-checked parsers and byte-exact writers for .npy, .npz, .safetensors.
#include "compare/tensor_io.h"

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "reference/numerics.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensor_io stores element bytes as-is and needs a little-endian host"
#endif

namespace indexlab::compare {
namespace {

constexpr int kMaxRank = 64;  // NumPy's NPY_MAXDIMS

// ---- small helpers ---------------------------------------------------------------------------

bool mul_overflows(int64_t a, int64_t b, int64_t* out) { return __builtin_mul_overflow(a, b, out); }

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t load_u64(const uint8_t* p) {
  return static_cast<uint64_t>(load_u32(p)) | (static_cast<uint64_t>(load_u32(p + 4)) << 32);
}
void put_u16(std::vector<uint8_t>* out, uint32_t v) {
  out->push_back(static_cast<uint8_t>(v));
  out->push_back(static_cast<uint8_t>(v >> 8));
}
void put_u32(std::vector<uint8_t>* out, uint32_t v) {
  put_u16(out, v & 0xFFFFu);
  put_u16(out, v >> 16);
}
void put_u64(std::vector<uint8_t>* out, uint64_t v) {
  put_u32(out, static_cast<uint32_t>(v));
  put_u32(out, static_cast<uint32_t>(v >> 32));
}
void put_bytes(std::vector<uint8_t>* out, const std::string& s) {
  out->insert(out->end(), s.begin(), s.end());
}

template <typename T>
T load_elem(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Printable rendering of untrusted text for messages: at most 40 characters, escapes for bytes
// outside printable ASCII.
std::string quote(const std::string& s) {
  std::string r;
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F) {
      r += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      r += buf;
    }
  }
  if (s.size() > 40) r += "...";
  return r;
}

// Multi-index of flat element `flat` in `shape`, as "(i, j)"; "()" for a scalar.
std::string element_index(const std::vector<int64_t>& shape, int64_t flat) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx.empty() ? "()" : format_shape(idx);
}

float f16_to_float(uint16_t h) {
  const float sign = (h & 0x8000u) ? -1.0f : 1.0f;
  const int exponent = (h >> 10) & 0x1F;
  const int mantissa = h & 0x3FF;
  if (exponent == 0x1F) {
    return mantissa ? std::numeric_limits<float>::quiet_NaN() : sign * std::numeric_limits<float>::infinity();
  }
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -24);  // subnormal
  return sign * std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
}

// Validates a parsed shape and returns its byte size for `dtype`.
Status shape_nbytes(const std::vector<int64_t>& shape, DType dtype, int64_t* out) {
  if (shape.size() > static_cast<size_t>(kMaxRank)) {
    return error("rank ", shape.size(), " exceeds the maximum of ", kMaxRank);
  }
  int64_t n = 0;
  INDEXLAB_RETURN_IF_ERROR(checked_numel(shape, &n));
  if (mul_overflows(n, dtype_size(dtype), out)) {
    return error("shape ", format_shape(shape), " of ", dtype_name(dtype), " overflows int64 bytes");
  }
  return Status::Ok();
}

Status check_bool_bytes(const Tensor& t) {
  if (t.dtype != DType::BOOL) return Status::Ok();
  for (size_t i = 0; i < t.data.size(); ++i) {
    if (t.data[i] > 1) {
      return error("BOOL element ", element_index(t.shape, static_cast<int64_t>(i)), " has byte ",
                   static_cast<int>(t.data[i]), " (must be 0 or 1)");
    }
  }
  return Status::Ok();
}

// Calls f(i, value) for every element of an integer or BOOL tensor, values widened to 128 bits
// signed (enough for U64 and I64 alike); errors for float dtypes.
template <typename F>
Status for_each_integer(const Tensor& t, const char* target, F&& f) {
  const int64_t n = t.numel();
  const uint8_t* p = t.data.data();
  auto loop = [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) {
      INDEXLAB_RETURN_IF_ERROR(f(i, static_cast<__int128>(load_elem<T>(p + i * sizeof(T)))));
    }
    return Status::Ok();
  };
  switch (t.dtype) {
    case DType::I8:
      return loop(int8_t{});
    case DType::I16:
      return loop(int16_t{});
    case DType::I32:
      return loop(int32_t{});
    case DType::I64:
      return loop(int64_t{});
    case DType::U8:
    case DType::BOOL:
      return loop(uint8_t{});
    case DType::U16:
      return loop(uint16_t{});
    case DType::U32:
      return loop(uint32_t{});
    case DType::U64:
      return loop(uint64_t{});
    default:
      return error("dtype ", dtype_name(t.dtype), " does not convert to ", target,
                   " (an integer dtype is needed)");
  }
}

std::string int128_string(__int128 v) {
  if (v >= 0) return std::to_string(static_cast<uint64_t>(v));
  return "-" + std::to_string(static_cast<uint64_t>(-v));
}

template <typename T>
Status from_values(DType dtype, std::vector<int64_t> shape, const T* values, size_t count, Tensor* out) {
  int64_t n = 0;
  INDEXLAB_RETURN_IF_ERROR(checked_numel(shape, &n));
  if (static_cast<uint64_t>(n) != count) {
    return error("shape ", format_shape(shape), " needs ", n, " values but ", count, " were given");
  }
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data.resize(count * sizeof(T));
  if (count) std::memcpy(t.data.data(), values, count * sizeof(T));
  INDEXLAB_RETURN_IF_ERROR(t.check());
  *out = std::move(t);
  return Status::Ok();
}

// ---- .npy ----------------------------------------------------------------------------------------

constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr size_t kNpyMagicLen = 6;

struct NpyDescr {
  const char* descr;
  DType dtype;
};
// What the writer emits, one per dtype (numpy's dtype.str; ml_dtypes arrays save as '<V2'/'<V1').
constexpr NpyDescr kNpyDescrs[] = {
    {"<f4", DType::F32},     {"<f8", DType::F64},  {"<f2", DType::F16}, {"<V2", DType::BF16},
    {"<V1", DType::F8_E4M3}, {"|i1", DType::I8},   {"<i2", DType::I16}, {"<i4", DType::I32},
    {"<i8", DType::I64},     {"|u1", DType::U8},   {"<u2", DType::U16}, {"<u4", DType::U32},
    {"<u8", DType::U64},     {"|b1", DType::BOOL},
};

const char* npy_descr(DType dtype) {
  for (const NpyDescr& d : kNpyDescrs) {
    if (d.dtype == dtype) return d.descr;
  }
  return "?";
}

Status parse_npy_descr(const std::string& descr, DType* out) {
  if (descr == "bfloat16" || descr == "float8_e4m3fn") {
    return error("descr '", descr, "' is not a valid npy descr (NumPy saves ml_dtypes ", descr,
                 " arrays as '", descr == "bfloat16" ? "<V2" : "<V1", "')");
  }
  if (descr.size() == 3) {
    const std::string body = descr.substr(1);
    for (const NpyDescr& d : kNpyDescrs) {
      if (body != std::string(d.descr + 1)) continue;
      const bool one_byte = dtype_size(d.dtype) == 1;
      if (descr[0] == '<' || (descr[0] == '|' && (one_byte || body == "V2")) ||
          (descr[0] == '>' && one_byte)) {
        *out = d.dtype;
        return Status::Ok();
      }
      if (descr[0] == '>') {
        return error("descr '", descr,
                     "' is big-endian; only little-endian data is supported (save arr.astype('<", body,
                     "'))");
      }
    }
  }
  return error(
      "unsupported descr '", quote(descr),
      "' (supported: <f4 <f8 <f2 <i2 <i4 <i8 <u2 <u4 <u8 |i1 |u1 |b1, and <V2 = BF16, <V1 = F8_E4M3)");
}

// Strict parser of the header dict NumPy writes: {'descr': '<f4', 'fortran_order': False,
// 'shape': (2, 3), } with keys in any order, Python whitespace, optional trailing commas.
class NpyHeaderParser {
 public:
  explicit NpyHeaderParser(const std::string& text) : s_(text) {}

  Status parse(std::string* descr, bool* fortran_order, std::vector<int64_t>* shape) {
    std::set<std::string> seen;
    skip_ws();
    if (!eat('{')) return fail("the header does not start with '{'");
    for (;;) {
      skip_ws();
      if (eat('}')) break;
      std::string key;
      INDEXLAB_RETURN_IF_ERROR(parse_string("a key", &key));
      if (!seen.insert(key).second) return fail("duplicate key '" + quote(key) + "'");
      skip_ws();
      if (!eat(':')) return fail("expected ':' after key '" + quote(key) + "'");
      skip_ws();
      if (key == "descr") {
        if (peek() == '[') return fail("descr is a list: structured dtypes are not supported");
        INDEXLAB_RETURN_IF_ERROR(parse_string("descr", descr));
      } else if (key == "fortran_order") {
        INDEXLAB_RETURN_IF_ERROR(parse_bool(fortran_order));
      } else if (key == "shape") {
        INDEXLAB_RETURN_IF_ERROR(parse_shape(shape));
      } else {
        return fail("unexpected key '" + quote(key) + "' (only descr, fortran_order, shape)");
      }
      skip_ws();
      if (eat(',')) continue;
      if (eat('}')) break;
      return fail("expected ',' or '}'");
    }
    skip_ws();
    if (pos_ != s_.size()) return fail("unexpected text after the closing '}'");
    for (const char* k : {"descr", "fortran_order", "shape"}) {
      if (!seen.count(k)) return error("header has no '", k, "' key");
    }
    return Status::Ok();
  }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool eat(char c) {
    if (pos_ >= s_.size() || s_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  Status fail(const std::string& what) const { return error("bad header at byte ", pos_, ": ", what); }

  Status parse_string(const char* what, std::string* out) {
    const char q = peek();
    if (q != '\'' && q != '"') return fail(std::string("expected a quoted string for ") + what);
    const size_t end = s_.find(q, pos_ + 1);
    if (end == std::string::npos) return fail("unterminated string");
    *out = s_.substr(pos_ + 1, end - pos_ - 1);
    if (out->find('\\') != std::string::npos) return fail("escapes in strings are not supported");
    pos_ = end + 1;
    return Status::Ok();
  }

  Status parse_bool(bool* out) {
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      *out = true;
    } else if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      *out = false;
    } else {
      return fail("fortran_order must be True or False");
    }
    return Status::Ok();
  }

  Status parse_dim(int64_t* out) {
    if (peek() == '-') return fail("negative dim in shape");
    const size_t start = pos_;
    int64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      if (mul_overflows(v, 10, &v) || __builtin_add_overflow(v, s_[pos_] - '0', &v)) {
        return fail("dim " + s_.substr(start, 24) + " does not fit int64");
      }
      ++pos_;
    }
    if (pos_ == start) return fail("expected a non-negative integer dim in shape");
    if (pos_ - start > 1 && s_[start] == '0') return fail("dim with a leading zero");
    *out = v;
    return Status::Ok();
  }

  // "()", "(5,)", "(2, 3)", "(2, 3,)"; "(5)" is an int in Python, not a tuple, and is rejected.
  Status parse_shape(std::vector<int64_t>* shape) {
    shape->clear();
    if (!eat('(')) return fail("shape must be a tuple");
    skip_ws();
    if (eat(')')) return Status::Ok();
    for (;;) {
      if (shape->size() >= static_cast<size_t>(kMaxRank)) return fail("shape has more than 64 dims");
      int64_t d = 0;
      INDEXLAB_RETURN_IF_ERROR(parse_dim(&d));
      shape->push_back(d);
      skip_ws();
      if (eat(',')) {
        skip_ws();
        if (eat(')')) return Status::Ok();
        continue;
      }
      if (eat(')')) {
        if (shape->size() == 1)
          return fail("shape (" + std::to_string(d) + ") is not a tuple (write (" + std::to_string(d) +
                      ",))");
        return Status::Ok();
      }
      return fail("expected ',' or ')' in shape");
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

// ---- zip (.npz) -----------------------------------------------------------------------------------

constexpr uint32_t kZipLocal = 0x04034b50, kZipCentral = 0x02014b50, kZipEnd = 0x06054b50;
constexpr uint32_t kZip64End = 0x06064b50, kZip64Locator = 0x07064b50;
constexpr size_t kZipLocalLen = 30, kZipCentralLen = 46, kZipEndLen = 22;
constexpr size_t kZip64EndLen = 56, kZip64LocatorLen = 20;
constexpr uint32_t kZipVersion = 45;          // zip64-capable, what Python's zipfile writes
constexpr uint32_t kZipDosDate = 0x21;        // 1980-01-01, the date NumPy's savez members carry
constexpr uint32_t kZipUnixRw = 0600u << 16;  // external attributes: -rw-------
constexpr uint32_t kZipUtf8Flag = 0x800;

struct ZipMember {
  std::string name;
  uint32_t flags = 0, method = 0, crc = 0;
  uint64_t comp_size = 0, size = 0, local_offset = 0;
  uint64_t data_offset = 0;  // set from the local header
};

// Reads the zip64 extended-information field (id 1) of a central entry: each 32-bit field that
// holds 0xFFFFFFFF is replaced, in order, by a 64-bit value from the field.
Status read_zip64_extra(const uint8_t* extra, size_t len, uint32_t size32, uint32_t comp32, uint32_t offset32,
                        ZipMember* m) {
  size_t p = 0;
  while (p + 4 <= len) {
    const uint16_t id = load_u16(extra + p);
    const uint16_t flen = load_u16(extra + p + 2);
    if (p + 4 + flen > len) return error("extra field 0x", std::hex, id, " overruns the extra area");
    if (id == 1) {
      size_t q = p + 4;
      const size_t end = q + flen;
      for (auto [value32, target] : {std::pair{size32, &m->size}, std::pair{comp32, &m->comp_size},
                                     std::pair{offset32, &m->local_offset}}) {
        if (value32 != 0xFFFFFFFFu) continue;
        if (q + 8 > end) return error("zip64 extra field is too short");
        *target = load_u64(extra + q);
        q += 8;
      }
    }
    p += 4 + flen;
  }
  return Status::Ok();
}

// Parses the central directory; members come back in directory order with data offsets set.
Status read_zip_directory(const uint8_t* data, size_t size, std::vector<ZipMember>* members) {
  if (size < kZipEndLen) return error("only ", size, " bytes: too short for a zip archive");
  // The end record sits at the end, followed only by its comment (at most 65535 bytes).
  size_t end = SIZE_MAX;
  const size_t lowest = size - kZipEndLen > 0xFFFF ? size - kZipEndLen - 0xFFFF : 0;
  for (size_t i = size - kZipEndLen + 1; i-- > lowest;) {
    if (load_u32(data + i) == kZipEnd && i + kZipEndLen + load_u16(data + i + 20) == size) {
      end = i;
      break;
    }
  }
  if (end == SIZE_MAX)
    return error("no zip end-of-central-directory record: not a zip archive, or truncated");
  const uint8_t* e = data + end;
  if (load_u16(e + 4) != 0 || load_u16(e + 6) != 0 || load_u16(e + 8) != load_u16(e + 10)) {
    return error("multi-disk zip archives are not supported");
  }
  uint64_t count = load_u16(e + 10), cd_size = load_u32(e + 12), cd_offset = load_u32(e + 16);
  size_t cd_limit = end;  // the directory must end before this offset
  if (end >= kZip64LocatorLen && load_u32(data + end - kZip64LocatorLen) == kZip64Locator) {
    const uint8_t* loc = data + end - kZip64LocatorLen;
    const uint64_t rec = load_u64(loc + 8);
    if (rec > end - kZip64LocatorLen || end - kZip64LocatorLen - rec < kZip64EndLen) {
      return error("zip64 locator points at offset ", rec, ", outside the archive");
    }
    const uint8_t* z = data + rec;
    if (load_u32(z) != kZip64End) return error("zip64 end record at offset ", rec, " has a bad signature");
    if (load_u32(z + 16) != 0 || load_u32(z + 20) != 0 || load_u64(z + 24) != load_u64(z + 32)) {
      return error("multi-disk zip archives are not supported");
    }
    count = load_u64(z + 32);
    cd_size = load_u64(z + 40);
    cd_offset = load_u64(z + 48);
    cd_limit = rec;
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset) {
    return error("central directory [", cd_offset, ", +", cd_size, ") lies outside the archive (", cd_limit,
                 " bytes before the end record)");
  }
  if (count > cd_size / kZipCentralLen) {
    return error("end record claims ", count, " members but the directory has only ", cd_size, " bytes");
  }
  std::vector<ZipMember> out;
  std::set<std::string> names;
  size_t p = cd_offset;
  const size_t cd_end = cd_offset + cd_size;
  for (uint64_t k = 0; k < count; ++k) {
    if (cd_end - p < kZipCentralLen || load_u32(data + p) != kZipCentral) {
      return error("central directory entry ", k, " at offset ", p, " is truncated or has a bad signature");
    }
    const uint8_t* c = data + p;
    const size_t name_len = load_u16(c + 28), extra_len = load_u16(c + 30), comment_len = load_u16(c + 32);
    if (cd_end - p - kZipCentralLen < name_len + extra_len + comment_len) {
      return error("central directory entry ", k, " overruns the directory");
    }
    ZipMember m;
    m.name.assign(reinterpret_cast<const char*>(c + kZipCentralLen), name_len);
    const std::string who = "member '" + quote(m.name) + "': ";
    m.flags = load_u16(c + 8);
    m.method = load_u16(c + 10);
    m.crc = load_u32(c + 16);
    m.comp_size = load_u32(c + 20);
    m.size = load_u32(c + 24);
    m.local_offset = load_u32(c + 42);
    INDEXLAB_RETURN_IF_ERROR(read_zip64_extra(c + kZipCentralLen + name_len, extra_len, load_u32(c + 24),
                                              load_u32(c + 20), load_u32(c + 42), &m)
                                 .with_context(who));
    if (!names.insert(m.name).second) return error(who, "duplicate member name");
    if (m.flags & 0x41) return error(who, "encrypted members are not supported");
    if (m.method != 0 && m.method != 8) {
      return error(who, "compression method ", m.method, " is not supported (only 0 = stored, 8 = deflate)");
    }
    if (m.method == 0 && m.comp_size != m.size) {
      return error(who, "stored member has compressed size ", m.comp_size, " != size ", m.size);
    }
    // Local header: its own name and extra lengths decide where the data starts.
    if (m.local_offset > cd_offset || cd_offset - m.local_offset < kZipLocalLen) {
      return error(who, "local header offset ", m.local_offset, " is outside the member area");
    }
    const uint8_t* l = data + m.local_offset;
    if (load_u32(l) != kZipLocal)
      return error(who, "local header at offset ", m.local_offset, " has a bad signature");
    const uint64_t local_name_len = load_u16(l + 26), local_extra_len = load_u16(l + 28);
    m.data_offset = m.local_offset + kZipLocalLen + local_name_len + local_extra_len;
    if (m.data_offset > cd_offset || m.comp_size > cd_offset - m.data_offset) {
      return error(who, "data [", m.data_offset, ", +", m.comp_size, ") runs past the member area (",
                   cd_offset, " bytes)");
    }
    if (local_name_len != name_len || std::memcmp(l + kZipLocalLen, m.name.data(), name_len) != 0) {
      return error(who, "local header names the member differently");
    }
    out.push_back(std::move(m));
    p += kZipCentralLen + name_len + extra_len + comment_len;
  }
  // Members must not share bytes (overlapping members make small archives inflate enormously).
  std::vector<const ZipMember*> by_offset;
  for (const ZipMember& m : out) by_offset.push_back(&m);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ZipMember* a, const ZipMember* b) { return a->local_offset < b->local_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipMember& a = *by_offset[i - 1];
    if (a.data_offset + a.comp_size > by_offset[i]->local_offset) {
      return error("member '", quote(by_offset[i]->name), "' overlaps member '", quote(a.name), "'");
    }
  }
  *members = std::move(out);
  return Status::Ok();
}

uint32_t crc32_of(const uint8_t* p, size_t n) {
  return static_cast<uint32_t>(crc32_z(crc32_z(0, nullptr, 0), p, n));
}

// Raw-deflate decode of exactly `size` bytes; the output grows with what the stream really
// produces, so a lying size field cannot force a large allocation.
Status inflate_member(const uint8_t* in, uint64_t in_size, uint64_t size, std::vector<uint8_t>* out) {
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) return error("zlib inflateInit2 failed");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);
  out->clear();
  uint64_t in_used = 0, produced = 0;
  uint8_t probe = 0;  // one spare byte to detect streams longer than `size`
  for (;;) {
    if (produced == out->size() && produced < size) {
      out->resize(static_cast<size_t>(std::min<uint64_t>(size, std::max<uint64_t>(2 * produced, 1 << 16))));
    }
    const bool full = produced == size;
    zs.next_out = full ? &probe : out->data() + produced;
    zs.avail_out = full ? 1u : static_cast<uInt>(std::min<uint64_t>(out->size() - produced, 1u << 30));
    const uInt out_before = zs.avail_out;
    zs.next_in = const_cast<uint8_t*>(in + in_used);
    zs.avail_in = static_cast<uInt>(std::min<uint64_t>(in_size - in_used, 1u << 30));
    const uInt in_before = zs.avail_in;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    in_used += in_before - zs.avail_in;
    const uInt wrote = out_before - zs.avail_out;
    if (full && wrote)
      return error("deflate data inflates to more than the ", size, " bytes the directory says");
    produced += wrote;
    if (rc == Z_STREAM_END) break;
    if (rc == Z_DATA_ERROR) return error("corrupt deflate data: ", zs.msg ? zs.msg : "?");
    if (rc != Z_OK && rc != Z_BUF_ERROR) return error("zlib inflate failed with code ", rc);
    if (in_before == 0 && wrote == 0) return error("deflate data ends early (", produced, " bytes inflated)");
  }
  if (produced != size)
    return error("deflate data inflates to ", produced, " bytes but the directory says ", size);
  return Status::Ok();
}

// ---- safetensors ------------------------------------------------------------------------------------

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr int kMaxJsonDepth = 8;  // a valid header nests 3 deep

// Thrown from the parse callback to stop at the first duplicate key or excessive nesting.
struct JsonReject {
  std::string what;
};

// Ranks the Python package sorts tensors by (descending), keeping larger elements aligned.
int safetensors_rank(DType d) {
  static constexpr DType kOrder[] = {DType::BOOL, DType::U8,  DType::I8,   DType::F8_E4M3, DType::I16,
                                     DType::U16,  DType::F16, DType::BF16, DType::I32,     DType::U32,
                                     DType::F32,  DType::F64, DType::I64,  DType::U64};
  return static_cast<int>(std::find(std::begin(kOrder), std::end(kOrder), d) - std::begin(kOrder));
}

Status json_uint(const json& v, const char* what, uint64_t* out) {
  if (!v.is_number_unsigned()) {
    if (v.is_number_integer()) return error(what, " ", v.dump(), " is negative");
    return error(what, " ", quote(v.dump()), " is not a non-negative integer");
  }
  *out = v.get<uint64_t>();
  return Status::Ok();
}

struct StEntry {
  std::string name;
  uint64_t begin = 0, end = 0;
};

Status parse_safetensors_entry(const json& info, uint64_t buffer_size, Tensor* t, StEntry* entry) {
  if (!info.is_object()) return error("entry is not a JSON object");
  for (const auto& [key, value] : info.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return error("unexpected key '", quote(key), "' (only dtype, shape, data_offsets)");
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!info.contains(key)) return error("missing '", key, "'");
  }
  const json& dtype = info["dtype"];
  if (!dtype.is_string() || !dtype_from_name(dtype.get<std::string>(), &t->dtype)) {
    return error("unsupported dtype ", quote(dtype.dump()),
                 " (supported: F32 F64 F16 BF16 F8_E4M3 I8 I16 I32 I64 U8 U16 U32 U64 BOOL)");
  }
  const json& shape = info["shape"];
  if (!shape.is_array()) return error("shape is not an array");
  if (shape.size() > static_cast<size_t>(kMaxRank)) return error("shape has more than ", kMaxRank, " dims");
  t->shape.clear();
  for (const json& d : shape) {
    uint64_t v = 0;
    INDEXLAB_RETURN_IF_ERROR(json_uint(d, "shape dim", &v));
    if (v > static_cast<uint64_t>(INT64_MAX)) return error("shape dim ", v, " does not fit int64");
    t->shape.push_back(static_cast<int64_t>(v));
  }
  int64_t nbytes = 0;
  INDEXLAB_RETURN_IF_ERROR(shape_nbytes(t->shape, t->dtype, &nbytes));
  const json& offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) return error("data_offsets is not a [begin, end] pair");
  INDEXLAB_RETURN_IF_ERROR(json_uint(offsets[0], "data_offsets begin", &entry->begin));
  INDEXLAB_RETURN_IF_ERROR(json_uint(offsets[1], "data_offsets end", &entry->end));
  if (entry->begin > entry->end || entry->end > buffer_size) {
    return error("data_offsets [", entry->begin, ", ", entry->end, "] are outside the ", buffer_size,
                 "-byte data area");
  }
  if (entry->end - entry->begin != static_cast<uint64_t>(nbytes)) {
    return error("data_offsets [", entry->begin, ", ", entry->end, "] span ", entry->end - entry->begin,
                 " bytes but shape ", format_shape(t->shape), " of ", dtype_name(t->dtype), " needs ",
                 nbytes);
  }
  return Status::Ok();
}

// ---- files --------------------------------------------------------------------------------------------

Status read_file(const std::string& path, std::vector<uint8_t>* out) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) return error(path, ": cannot open: ", std::strerror(errno));
  out->clear();
  uint8_t buf[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) out->insert(out->end(), buf, buf + n);
  if (std::ferror(f.get())) return error(path, ": read failed: ", std::strerror(errno));
  return Status::Ok();
}

Status write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return error(path, ": cannot create: ", std::strerror(errno));
  const bool wrote = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  const bool closed = std::fclose(f) == 0;
  if (!wrote || !closed) return error(path, ": write failed: ", std::strerror(errno));
  return Status::Ok();
}

// "dir/q.npy" -> "q"
std::string file_stem(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = base.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

Status check_name(const std::string& name) {
  if (name.empty()) return error("empty tensor name");
  if (name.find('\0') != std::string::npos)
    return error("tensor name '", quote(name), "' contains a NUL byte");
  return Status::Ok();
}

}  // namespace

// ---- dtypes and shapes --------------------------------------------------------------------------

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F64:
      return "F64";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::F8_E4M3:
      return "F8_E4M3";
    case DType::I8:
      return "I8";
    case DType::I16:
      return "I16";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::U8:
      return "U8";
    case DType::U16:
      return "U16";
    case DType::U32:
      return "U32";
    case DType::U64:
      return "U64";
    case DType::BOOL:
      return "BOOL";
  }
  return "?";
}

int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64:
    case DType::I64:
    case DType::U64:
      return 8;
    case DType::F32:
    case DType::I32:
    case DType::U32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
    case DType::U16:
      return 2;
    default:
      return 1;
  }
}

bool dtype_from_name(const std::string& name, DType* out) {
  for (int i = 0; i <= static_cast<int>(DType::BOOL); ++i) {
    if (name == dtype_name(static_cast<DType>(i))) {
      *out = static_cast<DType>(i);
      return true;
    }
  }
  return false;
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '(';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ')';
  return os.str();
}

Status checked_numel(const std::vector<int64_t>& shape, int64_t* out) {
  int64_t n = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) return error("shape ", format_shape(shape), " has negative dim ", i);
    overflow = overflow || mul_overflows(n, shape[i], &n);
  }
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) n = 0, overflow = false;
  if (overflow) return error("shape ", format_shape(shape), " has more than 2^63 elements");
  *out = n;
  return Status::Ok();
}

// ---- Tensor ---------------------------------------------------------------------------------------

int64_t Tensor::numel() const {
  int64_t n = 0;
  return checked_numel(shape, &n).ok() ? n : -1;
}

int64_t Tensor::nbytes() const {
  int64_t n = 0;
  return shape_nbytes(shape, dtype, &n).ok() ? n : -1;
}

Status Tensor::check() const {
  int64_t n = 0;
  INDEXLAB_RETURN_IF_ERROR(shape_nbytes(shape, dtype, &n));
  if (data.size() != static_cast<uint64_t>(n)) {
    return error("shape ", format_shape(shape), " of ", dtype_name(dtype), " needs ", n,
                 " bytes but the tensor holds ", data.size());
  }
  return check_bool_bytes(*this);
}

Status Tensor::to_f32(std::vector<float>* out) const {
  INDEXLAB_RETURN_IF_ERROR(check());
  const int64_t n = numel();
  const uint8_t* p = data.data();
  std::vector<float> v(static_cast<size_t>(n));
  switch (dtype) {
    case DType::F32:
      if (n > 0) std::memcpy(v.data(), p, static_cast<size_t>(n) * 4);  // empty: both may be null
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) v[i] = f16_to_float(load_elem<uint16_t>(p + 2 * i));
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) v[i] = ref::bf16_to_float(load_elem<uint16_t>(p + 2 * i));
      break;
    case DType::F8_E4M3:
      for (int64_t i = 0; i < n; ++i) v[i] = ref::e4m3_to_float(p[i]);
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) {
        const double d = load_elem<double>(p + 8 * i);
        v[i] = static_cast<float>(d);
        if (!std::isnan(d) && static_cast<double>(v[i]) != d) {
          std::ostringstream os;
          os.precision(17);
          os << d;
          return error("F64 element ", element_index(shape, i), " = ", os.str(),
                       " is not exactly representable as F32");
        }
      }
      break;
    default:
      INDEXLAB_RETURN_IF_ERROR(for_each_integer(*this, "F32", [&](int64_t i, __int128 x) {
        // |float| <= 2^64 here, so the round trip through __int128 is exact.
        v[i] = static_cast<float>(x);
        if (static_cast<__int128>(v[i]) != x) {
          return error(dtype_name(dtype), " element ", element_index(shape, i), " = ", int128_string(x),
                       " is not exactly representable as F32");
        }
        return Status::Ok();
      }));
  }
  *out = std::move(v);
  return Status::Ok();
}

Status Tensor::to_i32(std::vector<int32_t>* out) const {
  INDEXLAB_RETURN_IF_ERROR(check());
  std::vector<int32_t> v(static_cast<size_t>(numel()));
  INDEXLAB_RETURN_IF_ERROR(for_each_integer(*this, "I32", [&](int64_t i, __int128 x) {
    if (x < INT32_MIN || x > INT32_MAX) {
      return error(dtype_name(dtype), " element ", element_index(shape, i), " = ", int128_string(x),
                   " is outside the I32 range");
    }
    v[i] = static_cast<int32_t>(x);
    return Status::Ok();
  }));
  *out = std::move(v);
  return Status::Ok();
}

Status Tensor::to_i64(std::vector<int64_t>* out) const {
  INDEXLAB_RETURN_IF_ERROR(check());
  std::vector<int64_t> v(static_cast<size_t>(numel()));
  INDEXLAB_RETURN_IF_ERROR(for_each_integer(*this, "I64", [&](int64_t i, __int128 x) {
    if (x > INT64_MAX) {
      return error(dtype_name(dtype), " element ", element_index(shape, i), " = ", int128_string(x),
                   " is outside the I64 range");
    }
    v[i] = static_cast<int64_t>(x);
    return Status::Ok();
  }));
  *out = std::move(v);
  return Status::Ok();
}

Status Tensor::from_f32(std::vector<int64_t> shape, const std::vector<float>& values, Tensor* out) {
  return from_values(DType::F32, std::move(shape), values.data(), values.size(), out);
}

Status Tensor::from_i32(std::vector<int64_t> shape, const std::vector<int32_t>& values, Tensor* out) {
  return from_values(DType::I32, std::move(shape), values.data(), values.size(), out);
}

Status Tensor::from_i64(std::vector<int64_t> shape, const std::vector<int64_t>& values, Tensor* out) {
  return from_values(DType::I64, std::move(shape), values.data(), values.size(), out);
}

Status Tensor::from_u8(std::vector<int64_t> shape, const std::vector<uint8_t>& values, Tensor* out,
                       DType dtype) {
  if (dtype_size(dtype) != 1) return error("from_u8 needs a one-byte dtype, not ", dtype_name(dtype));
  return from_values(dtype, std::move(shape), values.data(), values.size(), out);
}

Status Tensor::from_raw(DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes, Tensor* out) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data = std::move(bytes);
  INDEXLAB_RETURN_IF_ERROR(t.check());
  *out = std::move(t);
  return Status::Ok();
}

// ---- .npy -------------------------------------------------------------------------------------------

Status read_npy(const uint8_t* data, size_t size, const std::string& label, Tensor* out) {
  const std::string at = label + ": ";
  if (size < kNpyMagicLen + 4) return error(at, "only ", size, " bytes: too short for an .npy header");
  if (std::memcmp(data, kNpyMagic, kNpyMagicLen) != 0) return error(at, "bad magic: not an .npy file");
  const int major = data[6], minor = data[7];
  if (major < 1 || major > 3 || minor != 0)
    return error(at, "unsupported .npy format version ", major, ".", minor);
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (size < kNpyMagicLen + 2 + len_bytes)
    return error(at, "only ", size, " bytes: too short for an .npy header");
  const uint64_t header_len = major == 1 ? load_u16(data + 8) : load_u32(data + 8);
  const size_t header_start = kNpyMagicLen + 2 + len_bytes;
  if (header_len > size - header_start) {
    return error(at, "header length ", header_len, " exceeds the ", size - header_start,
                 " bytes after the preamble");
  }
  const std::string header(reinterpret_cast<const char*>(data + header_start), header_len);
  std::string descr;
  bool fortran_order = false;
  Tensor t;
  INDEXLAB_RETURN_IF_ERROR(NpyHeaderParser(header).parse(&descr, &fortran_order, &t.shape).with_context(at));
  INDEXLAB_RETURN_IF_ERROR(parse_npy_descr(descr, &t.dtype).with_context(at));
  if (fortran_order) {
    return error(at,
                 "fortran_order is True (column-major data); save a C-ordered array (np.ascontiguousarray)");
  }
  int64_t nbytes = 0;
  INDEXLAB_RETURN_IF_ERROR(shape_nbytes(t.shape, t.dtype, &nbytes).with_context(at + "header: "));
  const size_t remain = size - header_start - header_len;
  if (static_cast<uint64_t>(nbytes) > remain) {
    return error(at, "header says shape ", format_shape(t.shape), " of ", descr, " = ", nbytes, " bytes but ",
                 remain, " bytes remain");
  }
  if (static_cast<uint64_t>(nbytes) < remain) {
    return error(at, remain - nbytes, " trailing bytes after the ", nbytes, " bytes of shape ",
                 format_shape(t.shape), " of ", descr);
  }
  t.data.assign(data + header_start + header_len, data + size);
  INDEXLAB_RETURN_IF_ERROR(check_bool_bytes(t).with_context(at));
  *out = std::move(t);
  return Status::Ok();
}

Status write_npy(const Tensor& tensor, std::vector<uint8_t>* out) {
  INDEXLAB_RETURN_IF_ERROR(tensor.check());
  // Python's repr of the shape tuple: (), (5,), (2, 3).
  std::string shape = "(";
  for (size_t i = 0; i < tensor.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(tensor.shape[i]);
  shape += tensor.shape.size() == 1 ? ",)" : ")";
  std::string header = std::string("{'descr': '") + npy_descr(tensor.dtype) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // numpy leaves room for the first dim to grow to 21 digits.
  if (!tensor.shape.empty()) header.append(21 - std::to_string(tensor.shape[0]).size(), ' ');
  // Pad so the data starts 64-byte aligned. Rank <= 64 keeps the header under 2 KB, so format
  // 1.0 (16-bit header length) always suffices, as numpy.save would also choose.
  header.append(64 - (kNpyMagicLen + 2 + 2 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::vector<uint8_t> bytes(kNpyMagic, kNpyMagic + kNpyMagicLen);
  bytes.push_back(1);
  bytes.push_back(0);
  put_u16(&bytes, static_cast<uint32_t>(header.size()));
  put_bytes(&bytes, header);
  bytes.insert(bytes.end(), tensor.data.begin(), tensor.data.end());
  *out = std::move(bytes);
  return Status::Ok();
}

// ---- .npz -------------------------------------------------------------------------------------------

Status read_npz(const uint8_t* data, size_t size, const std::string& label, TensorMap* out) {
  const std::string at = label + ": ";
  std::vector<ZipMember> members;
  INDEXLAB_RETURN_IF_ERROR(read_zip_directory(data, size, &members).with_context(at));
  TensorMap tensors;
  std::vector<uint8_t> inflated;
  for (const ZipMember& m : members) {
    const std::string who = at + "member '" + quote(m.name) + "': ";
    const std::string suffix = ".npy";
    if (m.name.size() <= suffix.size() ||
        m.name.compare(m.name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      return error(who, "not a '<name>.npy' member");
    }
    const std::string name = m.name.substr(0, m.name.size() - suffix.size());
    INDEXLAB_RETURN_IF_ERROR(check_name(name).with_context(who));
    const uint8_t* bytes = data + m.data_offset;
    if (m.method == 8) {
      INDEXLAB_RETURN_IF_ERROR(inflate_member(bytes, m.comp_size, m.size, &inflated).with_context(who));
      bytes = inflated.data();
    }
    const uint32_t crc = crc32_of(bytes, m.size);
    if (crc != m.crc) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "CRC-32 is %08x but the directory says %08x", crc, m.crc);
      return error(who, buf);
    }
    INDEXLAB_RETURN_IF_ERROR(read_npy(bytes, m.size, at + "member '" + quote(m.name) + "'", &tensors[name]));
  }
  *out = std::move(tensors);
  return Status::Ok();
}

Status write_npz(const TensorMap& tensors, std::vector<uint8_t>* out) {
  std::vector<uint8_t> zip, central;
  std::vector<uint8_t> npy;
  for (const auto& [name, tensor] : tensors) {
    INDEXLAB_RETURN_IF_ERROR(check_name(name));
    INDEXLAB_RETURN_IF_ERROR(write_npy(tensor, &npy).with_context("tensor '" + quote(name) + "': "));
    const std::string member = name + ".npy";
    if (member.size() > 0xFFFF) return error("tensor name of ", name.size(), " bytes is too long for zip");
    const bool ascii = std::all_of(member.begin(), member.end(), [](char c) { return (c & 0x80) == 0; });
    const uint32_t flags = ascii ? 0 : kZipUtf8Flag;
    const uint32_t crc = crc32_of(npy.data(), npy.size());
    const uint64_t offset = zip.size();
    if (npy.size() >= 0xFFFFFFFFu || offset >= 0xFFFFFFFFu) {
      return error("tensor '", quote(name), "': the .npz would reach 4 GiB; use .safetensors");
    }
    // Local header, always with the zip64 sizes field as numpy.savez (force_zip64) writes it.
    put_u32(&zip, kZipLocal);
    put_u16(&zip, kZipVersion);
    put_u16(&zip, flags);
    put_u16(&zip, 0);  // stored
    put_u16(&zip, 0);  // time 00:00:00
    put_u16(&zip, kZipDosDate);
    put_u32(&zip, crc);
    put_u32(&zip, 0xFFFFFFFFu);
    put_u32(&zip, 0xFFFFFFFFu);
    put_u16(&zip, static_cast<uint32_t>(member.size()));
    put_u16(&zip, 20);
    put_bytes(&zip, member);
    put_u16(&zip, 1);  // zip64 extended information: size, compressed size
    put_u16(&zip, 16);
    put_u64(&zip, npy.size());
    put_u64(&zip, npy.size());
    zip.insert(zip.end(), npy.begin(), npy.end());
    // Central directory entry.
    put_u32(&central, kZipCentral);
    put_u16(&central, kZipVersion | (3u << 8));  // made by: Unix
    put_u16(&central, kZipVersion);
    put_u16(&central, flags);
    put_u16(&central, 0);
    put_u16(&central, 0);
    put_u16(&central, kZipDosDate);
    put_u32(&central, crc);
    put_u32(&central, static_cast<uint32_t>(npy.size()));
    put_u32(&central, static_cast<uint32_t>(npy.size()));
    put_u16(&central, static_cast<uint32_t>(member.size()));
    put_u16(&central, 0);  // extra
    put_u16(&central, 0);  // comment
    put_u16(&central, 0);  // disk
    put_u16(&central, 0);  // internal attributes
    put_u32(&central, kZipUnixRw);
    put_u32(&central, static_cast<uint32_t>(offset));
    put_bytes(&central, member);
  }
  if (tensors.size() >= 0xFFFF || zip.size() + central.size() >= 0xFFFFFFFFu) {
    return error("the .npz would need zip64 (4 GiB or 65535 members); use .safetensors");
  }
  const uint32_t cd_offset = static_cast<uint32_t>(zip.size());
  zip.insert(zip.end(), central.begin(), central.end());
  put_u32(&zip, kZipEnd);
  put_u16(&zip, 0);
  put_u16(&zip, 0);
  put_u16(&zip, static_cast<uint32_t>(tensors.size()));
  put_u16(&zip, static_cast<uint32_t>(tensors.size()));
  put_u32(&zip, static_cast<uint32_t>(central.size()));
  put_u32(&zip, cd_offset);
  put_u16(&zip, 0);
  *out = std::move(zip);
  return Status::Ok();
}

// ---- .safetensors -----------------------------------------------------------------------------------

Status read_safetensors(const uint8_t* data, size_t size, const std::string& label, TensorMap* out,
                        Metadata* metadata) {
  const std::string at = label + ": ";
  if (size < 8) return error(at, "only ", size, " bytes: too short for the 8-byte header length");
  const uint64_t header_len = load_u64(data);
  if (header_len > size - 8)
    return error(at, "header length ", header_len, " exceeds the ", size - 8, " bytes after it");
  if (header_len == 0 || data[8] != '{') return error(at, "the JSON header does not start with '{'");
  json header;
  try {
    std::vector<std::set<std::string>> keys;  // keys seen in each open object
    header =
        json::parse(data + 8, data + 8 + header_len, [&](int depth, json::parse_event_t event, json& parsed) {
          if (depth > kMaxJsonDepth)
            throw JsonReject{"the JSON header nests deeper than " + std::to_string(kMaxJsonDepth)};
          if (event == json::parse_event_t::object_start) keys.emplace_back();
          if (event == json::parse_event_t::object_end) keys.pop_back();
          if (event == json::parse_event_t::key && !keys.back().insert(parsed.get<std::string>()).second) {
            throw JsonReject{"duplicate key '" + quote(parsed.get<std::string>()) + "' in the JSON header"};
          }
          return true;
        });
  } catch (const JsonReject& r) {
    return error(at, r.what);
  } catch (const json::exception& e) {
    return error(at, "bad JSON header: ", e.what());
  }
  const uint64_t buffer_size = size - 8 - header_len;
  const uint8_t* buffer = data + 8 + header_len;
  TensorMap tensors;
  Metadata meta;
  std::vector<StEntry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) return error(at, "__metadata__ is not an object");
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string()) return error(at, "__metadata__ value for '", quote(key), "' is not a string");
        meta[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string who = at + "tensor '" + quote(name) + "': ";
    INDEXLAB_RETURN_IF_ERROR(check_name(name).with_context(at));
    Tensor t;
    StEntry entry;
    entry.name = name;
    INDEXLAB_RETURN_IF_ERROR(parse_safetensors_entry(info, buffer_size, &t, &entry).with_context(who));
    t.data.assign(buffer + entry.begin, buffer + entry.end);
    INDEXLAB_RETURN_IF_ERROR(check_bool_bytes(t).with_context(who));
    tensors[name] = std::move(t);
    entries.push_back(std::move(entry));
  }
  // The tensors must tile [0, buffer_size) exactly: no overlap, no gap, nothing after the last.
  std::sort(entries.begin(), entries.end(), [](const StEntry& a, const StEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t cursor = 0;
  const StEntry* prev = nullptr;
  for (const StEntry& e : entries) {
    if (e.begin < cursor) {
      return error(at, "tensor '", quote(e.name), "': data_offsets [", e.begin, ", ", e.end,
                   "] overlap tensor '", quote(prev->name), "' [", prev->begin, ", ", prev->end, "]");
    }
    if (e.begin > cursor) {
      return error(at, "tensor '", quote(e.name), "': data_offsets [", e.begin, ", ", e.end,
                   "] leave bytes [", cursor, ", ", e.begin, ") of the data area unused");
    }
    cursor = e.end;
    prev = &e;
  }
  if (cursor != buffer_size) {
    return error(at, buffer_size - cursor,
                 " bytes after the last tensor's data are not covered by any data_offsets");
  }
  *out = std::move(tensors);
  if (metadata) *metadata = std::move(meta);
  return Status::Ok();
}

Status write_safetensors(const TensorMap& tensors, const Metadata& metadata, std::vector<uint8_t>* out) {
  std::vector<std::pair<const std::string*, const Tensor*>> order;
  for (const auto& [name, tensor] : tensors) {
    INDEXLAB_RETURN_IF_ERROR(check_name(name));
    if (name == "__metadata__") return error("'__metadata__' cannot be a tensor name in .safetensors");
    INDEXLAB_RETURN_IF_ERROR(tensor.check().with_context("tensor '" + quote(name) + "': "));
    order.emplace_back(&name, &tensor);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return safetensors_rank(a.second->dtype) > safetensors_rank(b.second->dtype);
  });
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : order) {
    ordered_json info = ordered_json::object();
    info["dtype"] = dtype_name(tensor->dtype);
    info["shape"] = tensor->shape;
    info["data_offsets"] = {offset, offset + tensor->data.size()};
    header[*name] = std::move(info);
    offset += tensor->data.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const ordered_json::exception& e) {
    return error("cannot encode the safetensors header (names and metadata must be UTF-8): ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::vector<uint8_t> bytes;
  bytes.reserve(8 + text.size() + offset);
  put_u64(&bytes, text.size());
  put_bytes(&bytes, text);
  for (const auto& [name, tensor] : order)
    bytes.insert(bytes.end(), tensor->data.begin(), tensor->data.end());
  *out = std::move(bytes);
  return Status::Ok();
}

// ---- dispatch --------------------------------------------------------------------------------------

Status format_from_path(const std::string& path, FileFormat* out) {
  const std::string p = lower(path);
  auto ends_with = [&](const std::string& s) {
    return p.size() >= s.size() && p.compare(p.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with(".npy")) {
    *out = FileFormat::Npy;
  } else if (ends_with(".npz")) {
    *out = FileFormat::Npz;
  } else if (ends_with(".safetensors")) {
    *out = FileFormat::Safetensors;
  } else {
    return error(path, ": unknown extension (expected .npy, .npz or .safetensors)");
  }
  return Status::Ok();
}

Status read_tensors_from_buffer(FileFormat format, const uint8_t* data, size_t size, const std::string& label,
                                TensorMap* out, Metadata* metadata) {
  TensorMap tensors;
  Metadata meta;
  switch (format) {
    case FileFormat::Npy: {
      Tensor t;
      INDEXLAB_RETURN_IF_ERROR(read_npy(data, size, label, &t));
      tensors[file_stem(label)] = std::move(t);
      break;
    }
    case FileFormat::Npz:
      INDEXLAB_RETURN_IF_ERROR(read_npz(data, size, label, &tensors));
      break;
    case FileFormat::Safetensors:
      INDEXLAB_RETURN_IF_ERROR(read_safetensors(data, size, label, &tensors, &meta));
      break;
  }
  *out = std::move(tensors);
  if (metadata) *metadata = std::move(meta);
  return Status::Ok();
}

Status write_tensors_to_buffer(FileFormat format, const TensorMap& tensors, std::vector<uint8_t>* out,
                               const Metadata& metadata) {
  if (format != FileFormat::Safetensors && !metadata.empty()) {
    return error("metadata can only be stored in .safetensors");
  }
  switch (format) {
    case FileFormat::Npy:
      if (tensors.size() != 1) return error("an .npy holds exactly one tensor, not ", tensors.size());
      return write_npy(tensors.begin()->second, out)
          .with_context("tensor '" + quote(tensors.begin()->first) + "': ");
    case FileFormat::Npz:
      return write_npz(tensors, out);
    case FileFormat::Safetensors:
      return write_safetensors(tensors, metadata, out);
  }
  return error("unknown format");
}

Status read_tensors(const std::string& path, TensorMap* out, Metadata* metadata) {
  FileFormat format;
  INDEXLAB_RETURN_IF_ERROR(format_from_path(path, &format));
  std::vector<uint8_t> bytes;
  INDEXLAB_RETURN_IF_ERROR(read_file(path, &bytes));
  return read_tensors_from_buffer(format, bytes.data(), bytes.size(), path, out, metadata);
}

Status write_tensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  FileFormat format;
  INDEXLAB_RETURN_IF_ERROR(format_from_path(path, &format));
  std::vector<uint8_t> bytes;
  INDEXLAB_RETURN_IF_ERROR(
      write_tensors_to_buffer(format, tensors, &bytes, metadata).with_context(path + ": "));
  return write_file(path, bytes);
}

Status expect_tensor(const TensorMap& tensors, const std::string& file, const std::string& name,
                     const std::vector<int64_t>& shape, const Tensor** out) {
  const auto it = tensors.find(name);
  if (it == tensors.end()) {
    std::string have;
    for (const auto& entry : tensors) have += (have.empty() ? "" : ", ") + quote(entry.first);
    return error(file, ": missing tensor '", name, "' (the file has: ", have.empty() ? "nothing" : have, ")");
  }
  const std::vector<int64_t>& got = it->second.shape;
  bool match = got.size() == shape.size();
  for (size_t i = 0; match && i < shape.size(); ++i) match = shape[i] == -1 || shape[i] == got[i];
  if (!match) {
    std::string want = "(";
    for (size_t i = 0; i < shape.size(); ++i)
      want += (i ? ", " : "") + (shape[i] == -1 ? "*" : std::to_string(shape[i]));
    want += ")";
    return error(file, ": tensor '", name, "' has shape ", format_shape(got), " but the problem needs ",
                 want);
  }
  if (out) *out = &it->second;
  return Status::Ok();
}

}  // namespace indexlab::compare
